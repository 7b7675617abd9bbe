"""Fresh-clone timing of README command (a): clone this checkout's HEAD into
an empty directory, run the README's first set-up command there verbatim
(venv + install + the main job on the embedded default), and record the wall
time of the whole, of the install, and of each stage (from the job's
``== stage X done in N s ==`` lines), with the load average at the start.

    python benchmarks/fresh_clone_command_a.py [--keep DIR]

Writes ``benchmarks/results/fresh_clone_command_a.{md,json}``. The pip cache
of the machine is used (as on any machine that installed these packages
before); the clone has no workdir, no venv and no compiled caches.
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
STAGE = re.compile(r"^== stage (\S+) done in ([\d.]+) s ==$", re.M)


def readme_command_a() -> str:
  """The README's first fenced set-up command (the one that runs the main job)."""
  text = open(os.path.join(ROOT, "README.md")).read()
  for line in text.splitlines():
    if line.startswith("python3 -m venv .venv") and "deocc_jax.main" in line:
      return line.strip()
  raise SystemExit("README.md has no command (a) line (python3 -m venv ... deocc_jax.main ...)")


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--keep", default="", help="clone here and keep it (default: a temp dir)")
  ap.add_argument("--out", default="fresh_clone_command_a")
  args = ap.parse_args()
  info = _common.machine()
  cmd = readme_command_a()
  head = subprocess.run(
      ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
  ).stdout.strip()
  base = args.keep or tempfile.mkdtemp(prefix="fresh_clone_")
  clone = os.path.join(base, "deocc-jax")
  subprocess.run(["git", "clone", "-q", ROOT, clone], check=True)
  # The whole command runs once; the install time is the time to the first stage line.
  t0 = time.perf_counter()
  proc = subprocess.Popen(
      ["bash", "-c", cmd],
      cwd=clone,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env={
          **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")},
          "PYTHONUNBUFFERED": "1",  # stage lines as they happen (the install's end)
      },
  )
  lines, install_s = [], None
  for line in proc.stdout:
    lines.append(line)
    if install_s is None and line.startswith("== stage "):
      install_s = time.perf_counter() - t0
  rc = proc.wait()
  total_s = time.perf_counter() - t0
  out = "".join(lines)
  if rc != 0:
    raise SystemExit(f"command (a) failed with {rc}:\n{out[-3000:]}")
  stages = [(name, float(s)) for name, s in STAGE.findall(out)]
  payload = {
      "machine": info,
      "commit": head,
      "command": cmd,
      "total_s": total_s,
      "install_s": install_s,
      "stages_s": dict(stages),
  }
  rows = "\n".join(f"| {n} | {s:.1f} |" for n, s in stages)
  md = (
      "# README command (a) from a fresh clone\n"
      f"Machine: {info['cpu']}, {info['cores']} cores, load at start "
      f"{info['loadavg_at_start']}, {info['date']}; commit {head}. Command, verbatim:\n\n"
      f"    {cmd}\n\n"
      f"**Total {total_s / 60:.1f} min** (install and start-up to the first stage "
      f"{(install_s or 0) / 60:.1f} min; pip's cache of this machine in use).\n\n"
      "| stage | wall s |\n|---|---|\n" + rows + "\n"
  )
  _common.write(args.out, payload, md)


if __name__ == "__main__":
  main()
