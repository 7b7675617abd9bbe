"""Examples/s of face generation + masking + batching (the grain pipeline).

Target (issue 2): >= 500 examples/s at 64 px on the 2-core CPU, so the data
pipeline is never the bottleneck. Run: python benchmarks/bench_data_pipeline.py
Writes benchmarks/results/data_pipeline.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from deocc_jax.data.pipeline import PipelineConfig, synthetic_loader  # noqa: E402


def measure(resolution: int, workers: int, batch: int, batches: int, repeats: int):
  rates = []
  for rep in range(repeats):
    cfg = PipelineConfig(batch_size=batch, seed=rep, worker_count=workers, worker_buffer_size=4)
    loader, _ = synthetic_loader(resolution=resolution, config=cfg)
    it = iter(loader)
    next(it)  # start-up (worker spawn) excluded
    t = time.perf_counter()
    for _ in range(batches):
      next(it)
    rates.append(batches * batch / (time.perf_counter() - t))
    del it
  return rates


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--batches", type=int, default=25)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
  args = ap.parse_args()
  flags.FLAGS.mark_as_parsed()
  info = _common.machine()
  rows, payload = [], {"machine": info, "results": []}
  for res in args.resolutions:
    for w in args.workers:
      rates = measure(res, w, args.batch, args.batches, args.repeats)
      med = _common.median(rates)
      payload["results"].append(
          {
              "resolution": res,
              "workers": w,
              "batch": args.batch,
              "examples_per_s": rates,
              "median": med,
          }
      )
      rows.append(
          f"| {res} | {w} | {args.batch} | {med:.0f} | " f"{min(rates):.0f} - {max(rates):.0f} |"
      )
  md = "\n".join(
      [
          "# Data pipeline throughput (generation + masking + batching)",
          f"Machine: {info['cpu']}, {info['cores']} cores, load at start "
          f"{info['loadavg_at_start']}, {info['date']}. Median of {args.repeats} runs of "
          f"{args.batches} batches after the first batch.",
          "",
          "| px | grain workers | batch | examples/s (median) | range |",
          "|---|---|---|---|---|",
          *rows,
      ]
  )
  _common.write("data_pipeline", payload, md)


if __name__ == "__main__":
  main()
