"""grain reader threads vs none: the data stream alone and the training loop.

The embedded default renders its faces in memory; grain's default reader
threads (ReadOptions.num_threads=16) then only poll and take CPU from the
training step. Measures, on the default config (32 px, the de-occlusion and
teacher batch size): seconds per batch of the stream alone and seconds per
step of a loop drawing a batch and dispatching the ArcFace teacher's train
step (asynchronous dispatch overlaps the two), read_threads 0 and 16 interleaved,
medians of the repeats and their ratio. Run:

    python benchmarks/bench_read_threads.py

Writes benchmarks/results/read_threads.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from deocc_jax.configs import base  # noqa: E402
from deocc_jax.training import registry, stage_spec, teacher_stage  # noqa: E402

KEYS = ("clean", "identity")


def stream_s_per_batch(threads: int, batches: int) -> float:
  c = base.get_config()
  c.pipeline.read_threads = threads
  it, _ = stage_spec.make_batches(c, c.teacher, registry.get("teacher"))
  for _ in range(3):
    next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return (time.perf_counter() - t) / batches


def loop_s_per_step(threads: int, steps: int, init_fn, step_fn) -> float:
  c = base.get_config()
  c.pipeline.read_threads = threads
  it, _ = stage_spec.make_batches(c, c.teacher, registry.get("teacher"))
  state = init_fn(jax.random.key(0))
  b = next(it)
  state, m = step_fn(state, {k: b[k] for k in KEYS})
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(steps):
    b = next(it)
    state, m = step_fn(state, {k: b[k] for k in KEYS})
  jax.block_until_ready(m)
  return (time.perf_counter() - t) / steps


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--batches", type=int, default=20)
  ap.add_argument("--steps", type=int, default=25)
  args = ap.parse_args()
  flags.FLAGS.mark_as_parsed()
  info = _common.machine()
  c = base.get_config()
  _, source = stage_spec.make_batches(c, c.teacher, registry.get("teacher"))
  init_fn, step_fn = teacher_stage.make_fns(c.teacher, source.num_classes, int(c.data.resolution))
  init_fn, step_fn = jax.jit(init_fn), jax.jit(step_fn)
  threads = (0, 16)
  stream = {t: [] for t in threads}
  loop = {t: [] for t in threads}
  for _ in range(args.repeats):  # interleaved: the machine's drift hits both alike
    for t in threads:
      stream[t].append(stream_s_per_batch(t, args.batches))
      loop[t].append(loop_s_per_step(t, args.steps, init_fn, step_fn))
  med = {
      k: {t: _common.median(v[t]) for t in threads} for k, v in (("stream", stream), ("loop", loop))
  }
  payload = {
      "machine": info,
      "stream_s_per_batch": {str(t): stream[t] for t in threads},
      "loop_s_per_step": {str(t): loop[t] for t in threads},
      "medians": {k: {str(t): v for t, v in m.items()} for k, m in med.items()},
  }
  bs = int(c.teacher.batch_size)
  md = "\n".join(
      [
          "# grain reader threads: none (read_threads=0, the default) vs grain's 16",
          f"Machine: {info['cpu']}, {info['cores']} cores, load at start "
          f"{info['loadavg_at_start']}, {info['date']}. Default config, {c.data.resolution} px; "
          f"median of {args.repeats} interleaved runs.",
          "",
          "| measure | read_threads 0 | read_threads 16 | 16 / 0 |",
          "|---|---|---|---|",
          f"| stream alone, s per batch of {bs} | {med['stream'][0]:.3f} | "
          f"{med['stream'][16]:.3f} | {med['stream'][16] / med['stream'][0]:.2f} |",
          f"| loop (batch + teacher train step, batch {bs}), s per step | "
          f"{med['loop'][0]:.3f} | {med['loop'][16]:.3f} | "
          f"{med['loop'][16] / med['loop'][0]:.2f} |",
      ]
  )
  _common.write("read_threads", payload, md)


if __name__ == "__main__":
  main()
