"""Fresh-clone timing of CI: clone this checkout's HEAD into an empty directory
and run ``bash .ci/run`` there as CI does (``CI=true``, no standard input),
recording the wall time of the whole, of the install (to pytest's first
line), the test counts, and the slowest tests (``--durations`` through
``PYTEST_ADDOPTS``, so .ci/run itself is unchanged), with the load average at
the start.

    python benchmarks/ci_timing.py [--keep DIR] [--durations 40]

Writes ``benchmarks/results/ci_timing.{md,json}``. The pip cache of the
machine is used; the clone has no venv and no compilation cache.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)$", re.M)
SUMMARY = re.compile(r"^(?:=+ )?(\d+ (?:passed|failed).*?) in ([\d.]+)s", re.M)


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--keep", default="", help="clone here and keep it (default: a temp dir)")
  ap.add_argument("--durations", type=int, default=40)
  ap.add_argument("--out", default="ci_timing")
  args = ap.parse_args()
  info = _common.machine()
  head = subprocess.run(
      ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
  ).stdout.strip()
  base = args.keep or tempfile.mkdtemp(prefix="ci_timing_")
  clone = os.path.join(base, "deocc-jax")
  subprocess.run(["git", "clone", "-q", ROOT, clone], check=True)
  env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
  env.update(CI="true", PYTHONUNBUFFERED="1", PYTEST_ADDOPTS=f"--durations={args.durations}")
  t0 = time.perf_counter()
  proc = subprocess.Popen(
      ["bash", ".ci/run"],
      cwd=clone,
      stdin=subprocess.DEVNULL,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=env,
  )
  lines, install_s = [], None
  for line in proc.stdout:
    lines.append(line)
    if install_s is None and (line.startswith("created: ") or line.startswith("bringing up")):
      install_s = time.perf_counter() - t0  # xdist's first line: pytest has started
  rc = proc.wait()
  total_s = time.perf_counter() - t0
  out = "".join(lines)
  with open(os.path.join(base, "ci_output.txt"), "w") as f:
    f.write(out)
  summary = SUMMARY.findall(out)
  slowest = [(float(s), when, test) for s, when, test in DURATION.findall(out)]
  payload = {
      "machine": info,
      "commit": head,
      "returncode": rc,
      "total_s": total_s,
      "install_s": install_s,
      "pytest_summary": summary[-1][0] if summary else None,
      "pytest_s": float(summary[-1][1]) if summary else None,
      "slowest": [{"s": s, "when": w, "test": t} for s, w, t in slowest],
  }
  rows = "\n".join(f"| {s:.1f} | {w} | `{t}` |" for s, w, t in slowest)
  md = (
      "# CI (`bash .ci/run`) from a fresh clone\n"
      f"Machine: {info['cpu']}, {info['cores']} cores, load at start "
      f"{info['loadavg_at_start']}, {info['date']}; commit {head}; exit status {rc}.\n\n"
      f"**Total {total_s / 60:.1f} min** (venv + install to pytest's start "
      f"{(install_s or 0) / 60:.1f} min, pip's cache of this machine in use); pytest: "
      f"{payload['pytest_summary']} in {(payload['pytest_s'] or 0) / 60:.1f} min.\n\n"
      "Slowest tests (s, phase, test; setup includes shared fixtures such as the tiny run):\n\n"
      "| s | phase | test |\n|---|---|---|\n" + rows + "\n"
  )
  _common.write(args.out, payload, md)
  if rc != 0:
    raise SystemExit(f".ci/run failed with {rc}; output in {base}/ci_output.txt")


if __name__ == "__main__":
  main()
