#!/usr/bin/env bash
# TPU-VM pod template: runs the same command on every worker of the slice.
#   launch/tpu_pod.sh my-tpu us-central2-b configs/paper_celeba.py:tpu_pod gs://bucket/runs/pod [--config.x=y]
# The repository must be checked out (and installed, with the gs:// extra:
# pip install -e ".[gcs]") at ~/deocc-jax on every worker. The workdir may be
# a gs:// URI: checkpoints, config.json, the lock and the logs go there.
# A maintenance event or a preemption sends SIGTERM to a worker: JAX's
# preemption service tells every worker, they save a checkpoint at an agreed
# step and exit with status 143; run the same command again to resume.
set -euo pipefail
TPU=${1:?tpu name}; ZONE=${2:?zone}; CONFIG=${3:?config}; WORKDIR=${4:?workdir}; shift 4
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd ~/deocc-jax && python -m deocc_jax.main --config=$CONFIG --workdir=$WORKDIR $*"
