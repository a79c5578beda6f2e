#!/usr/bin/env bash
# One command for a lent GPU: the CUDA training smoke test, resume, and throughput/MFU (benchmarks/gpu_check.py).
#   PYTHONPATH=. bash benchmarks/gpu_check.sh [OUT.json]            # GPU, < 8 minutes on an H200
#   PYTHONPATH=. bash benchmarks/gpu_check.sh --dry-run [OUT.json]  # CPU, tiny, < 1 minute (the tests run this)
# Figures go to OUT.json, else $OUT/gpu_check.json when $OUT is set, else ./gpu_check.json.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" "$here/gpu_check.py" "$@"
