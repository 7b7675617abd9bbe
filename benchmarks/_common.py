"""Shared helpers for the benchmarks: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> dict:
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  try:
    load = os.getloadavg()
  except OSError:
    load = (float("nan"),) * 3
  info = {
      "cpu": cpu,
      "cores": os.cpu_count(),
      "python": platform.python_version(),
      "loadavg_at_start": [round(x, 2) for x in load],
      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
  }
  try:
    import jax

    info["jax"] = jax.__version__
    info["jax_devices"] = [str(d) for d in jax.devices()]
  except Exception:  # pragma: no cover - jax always present here
    pass
  return info


def median(xs):
  return statistics.median(xs)


def write(name: str, payload: dict, markdown: str) -> None:
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
    json.dump(payload, f, indent=2)
  with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
    f.write(markdown.rstrip() + "\n")
  print(markdown)
