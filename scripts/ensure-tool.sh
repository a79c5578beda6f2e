#!/usr/bin/env bash
# ensure-tool.sh BINARY "DEBIAN PACKAGES" CONDA_ENV_FILE
# Installs a missing command-line tool from Debian's packages where apt-get is usable; otherwise says how.
set -euo pipefail
binary=$1 packages=$2 conda_env=$3
command -v "$binary" >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing $packages (provides $binary) with apt-get ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $packages >/dev/null
    command -v "$binary" >/dev/null 2>&1 && exit 0
fi
cat >&2 <<MSG
error: '$binary' is not installed and could not be installed automatically (needs apt-get as root).
Install it yourself, for example:
  sudo apt-get install $packages          # Debian/Ubuntu
  conda env create -f $conda_env          # conda/mamba (bioconda), then activate it
and run make again.
MSG
exit 1
