"""plmscale: compute-optimal scaling studies of protein language models."""

__version__ = "0.1.0"
