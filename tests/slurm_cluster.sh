#!/usr/bin/env bash
# The one-node loopback Slurm cluster for the Slurm tests and for trying profiles/slurm locally:
#   tests/slurm_cluster.sh start|stop|status|env|logs|install     (see scripts/slurm-cluster.sh)
exec bash "$(dirname "$0")/../scripts/slurm-cluster.sh" "$@"
