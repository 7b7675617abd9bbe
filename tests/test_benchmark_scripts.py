"""The GPU benchmark script runs (on CPU, at toy sizes): it builds its stages
from the base config and passes the frozen models as the step's argument, as
training does. (It had stopped running once the code read every field from
the base config; nothing ran it on CPU.)"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_paper_sizes_runs_at_toy_sizes(tmp_path):
  out = tmp_path / "gpu"
  proc = subprocess.run(
      [
          sys.executable,
          "benchmarks/gpu_paper_sizes.py",
          "--iters=1",
          "--deocc-batch=2",
          "--distill-batch=4",
          "--dtypes=float32",
          "--deocc-px=64",
          "--distill-px=64",
          f"--out={out}",
      ],
      cwd=ROOT,
      env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"},
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(out.with_suffix(".json").read_text())["results"]
  assert [(r["stage"], r["px"], r["batch"]) for r in rows] == [
      ("deocclusion", 64, 2),
      ("distillation", 64, 4),
  ]
  assert all(r["step_s"] > 0 and r["examples_per_s"] > 0 for r in rows)
