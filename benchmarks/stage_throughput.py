"""Examples/s and step time per training stage, from a run's metrics.jsonl.

    python benchmarks/stage_throughput.py workdir/synthetic
Writes benchmarks/results/stage_throughput.{md,json}: the median over the
logged intervals (the first interval, which includes compilation, excluded).
"""

from __future__ import annotations

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

STAGES = ("teacher", "deocclusion", "distill_hard", "distill_soft", "joint")


def main():
  workdir = sys.argv[1]
  info = _common.machine()
  rows, payload = [], {"machine": info, "workdir": os.path.abspath(workdir), "stages": {}}
  for stage in STAGES:
    path = os.path.join(workdir, stage, "logs", "metrics.jsonl")
    if not os.path.exists(path):
      continue
    recs = [json.loads(l) for l in open(path) if l.strip()]
    recs = [r for r in recs if "perf/examples_per_s" in r][1:]
    if not recs:
      continue
    eps = statistics.median(r["perf/examples_per_s"] for r in recs)
    st = statistics.median(r["perf/step_time_s"] for r in recs)
    payload["stages"][stage] = {
        "examples_per_s": eps,
        "step_time_s": st,
        "intervals": len(recs),
        "last_step": recs[-1]["step"],
    }
    rows.append(f"| {stage} | {eps:.1f} | {1e3 * st:.0f} | {recs[-1]['step']} |")
  md = "\n".join(
      [
          "# Training throughput per stage (CPU)",
          f"From the logs of `{workdir}` (median over logged intervals, compile excluded). "
          f"Machine: {info['cpu']}, {info['cores']} cores; read {info['date']}.",
          "",
          "| stage | examples/s | step (ms) | steps |",
          "|---|---|---|---|",
          *rows,
      ]
  )
  _common.write("stage_throughput", payload, md)


if __name__ == "__main__":
  main()
