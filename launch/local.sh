#!/usr/bin/env bash
# Run any config on this machine (all local devices).
#   launch/local.sh configs/synthetic.py workdir/synthetic [--config.x=y ...]
# SIGTERM (kill PID) saves a checkpoint at the next step and exits with status
# 143 ("[stage] preempted at step N, checkpoint saved in ..."); the same
# command resumes there.
set -euo pipefail
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; shift 2
exec python -m deocc_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
