#!/usr/bin/env bash
# A two-process JAX job on one CPU machine (manual coordinator on 127.0.0.1),
# 4 CPU devices per process (8 in all, as the tests), e.g. to check multi-host
# code paths or rehearse the paper's path before renting a cluster:
#   launch/two_process_cpu.sh configs/synthetic.py:cpu workdir/mp
#   launch/two_process_cpu.sh configs/paper_rehearsal.py /tmp/rehearsal
# Re-running it on the same workdir resumes (each process its own data
# position); the exit status is the first failing process's. Environment:
# PORT (coordinator, default 12355), DEVICES_PER_PROCESS (default 4).
#
# Preemption: SIGTERM (or Ctrl-C) to this script is passed to both processes;
# they agree on a step, save a checkpoint there ("[stage] preempted at step N,
# checkpoint saved in ...") and exit with status 143, which this script waits
# for and returns. Re-running the same command continues from that step.
set -euo pipefail
CONFIG=${1:?config}; WORKDIR=${2:?workdir}; shift 2
PORT=${PORT:-12355}
export JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}"
pids=()
for i in 0 1; do
  python -m deocc_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
    --config.distributed.mode=manual --config.distributed.coordinator_address=127.0.0.1:$PORT \
    --config.distributed.num_processes=2 --config.distributed.process_id=$i "$@" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for p in "${pids[@]}"; do
  while :; do
    rc=0
    wait "$p" || rc=$?
    # A trapped signal interrupts `wait` (status > 128) while the process is
    # still saving its checkpoint: wait for it again.
    if [ "$rc" -gt 128 ] && kill -0 "$p" 2>/dev/null; then continue; fi
    break
  done
  [ "$status" -ne 0 ] || status=$rc
done
exit "$status"
