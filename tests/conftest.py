import os

# numpy's OpenBLAS starts threads for tiny matrices; on 2 shared cores that makes scipy's optimisers
# ~100x slower. Set before any test module imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
