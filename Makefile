# Two entry points do all the set-up themselves:
#   make run   -> .venv + MMseqs2, then the whole workflow on config.yaml (the generated demo corpus)
#   make test  -> the same set-up, then the test suite
#   make study -> the same set-up, then CLM and MLM frontiers side by side (configs/study.yaml, docs/study.md)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
CORES ?= all
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=
# The suite runs in 2 processes, one test file per process at a time (pytest-xdist --dist loadfile: a file's
# module fixtures, e.g. one workflow run shared by its tests, are built once). PYTEST_JOBS=0: one process.
PYTEST_JOBS ?= 2

.PHONY: run study test test-multinode setup mmseqs slurm-tools bench report clean-results

run: setup
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html $(SNAKEMAKE_ARGS)

# The paper's comparison (configs/study.yaml over config.yaml): CLM and MLM IsoFLOP frontiers and a_MLM - a_CLM,
# into results/ like `make run` (run it in its own clone: the CLM grid's run ids overlap the demo's).
STUDY_CONFIG := --configfile config.yaml configs/study.yaml
study: setup
	$(BIN)/snakemake --cores $(CORES) $(STUDY_CONFIG) $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --cores $(CORES) $(STUDY_CONFIG) --report results/report.html $(SNAKEMAKE_ARGS)

test: setup slurm-tools
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) --dist loadfile $(PYTEST_ARGS)

# The two-node Slurm tests (tests/test_multinode.py: network namespaces, so root): ~5 minutes on 2 cores, kept
# out of `make test`'s 12 minutes; CI (.ci/run) runs both.
test-multinode: setup slurm-tools
	$(BIN)/python -m pytest -m multinode $(PYTEST_ARGS)

setup: $(VENV)/.installed mmseqs

# torch is installed first and pinned: on a CPU-only machine the pinned version resolves to the CPU
# wheel; an unpinned torch would pull gigabytes of CUDA packages.
$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev,slurm,watch]"
	@touch $@

mmseqs:
	@bash scripts/ensure-tool.sh mmseqs mmseqs2 envs/mmseqs2.yaml

# The Slurm tests bring up a one-node cluster on loopback (tests/slurm_cluster.sh); they need Debian's
# slurm-wlm and munge, and slurmdbd + mariadb-server for sacct, which the executor plugin tracks jobs with.
# Where they cannot be installed (no apt-get, not root) the Slurm tests skip and say why.
slurm-tools:
	@bash scripts/slurm-cluster.sh install || true

bench: setup
	$(BIN)/python -m pip install --quiet -c requirements.lock ".[bench]"
	@echo "run a benchmark with: $(BIN)/python benchmarks/<name>.py --help"

clean-results:
	rm -rf results logs .snakemake
