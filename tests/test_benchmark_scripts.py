"""The benchmark scripts that model or time the paper's steps run (on CPU, at
toy sizes): ``gpu_paper_sizes.py`` builds the paper config's steps
(``benchmarks/paper_steps.py``), passes the frozen models as the step's
argument as training does, and times them; ``scale_model.py --smoke`` writes
its table with every field, its projections following from its measurements.
(The GPU script had stopped running once the code read every field from the
base config; nothing ran it on CPU.)"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
FIELDS = (
    "stage",
    "px",
    "host_ms_per_example",
    "flops_per_example",
    "device_memory_bytes",
    "projected_examples_per_s",
    "cores_per_accelerator",
)


def _run(args, timeout=600):
  proc = subprocess.run(
      [sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_gpu_paper_sizes_runs_at_toy_sizes(tmp_path):
  out = tmp_path / "gpu"
  _run(
      [
          "benchmarks/gpu_paper_sizes.py",
          "--iters=1",
          "--stages",
          "segmentation",
          "--dtypes",
          "configured",
          "--px=32",
          "--batch=2",
          f"--out={out}",
      ]
  )
  rows = json.loads(out.with_suffix(".json").read_text())["results"]
  assert [(r["stage"], r["px"], r["batch"], r["dtype"]) for r in rows] == [
      ("segmentation", 32, 2, "float32")
  ]
  r = rows[0]
  assert r["step_s"] > 0 and r["flops_per_step"] > 0
  assert abs(r["examples_per_s"] - 2 / r["step_s"]) < 1e-6 * r["examples_per_s"]
  assert r["mfu"] is None  # no known peak for a CPU


def test_scale_model_smoke(tmp_path):
  out = tmp_path / "scale"
  _run(["benchmarks/scale_model.py", "--smoke", f"--out={out}"])
  payload = json.loads(out.with_suffix(".json").read_text())
  rows = payload["stages"]
  assert {(r["stage"], r["accelerator"]) for r in rows} == {
      (s, a) for s in ("teacher_embeddings", "segmentation") for a in ("H200", "TPU v5e")
  }
  for r in rows:
    assert all(k in r for k in FIELDS), r
    assert r["px"] == payload["px"] == 32
    for k in FIELDS[2:]:
      assert r[k] > 0, (r["stage"], k, r[k])
    peak = {"H200": 989e12 if r["bf16"] else 494e12, "TPU v5e": 197e12}[r["accelerator"]]
    assert r["peak_flops"] == peak
    assert abs(r["projected_examples_per_s"] - 0.4 * peak / r["flops_per_example"]) < 1e-9 * (
        r["projected_examples_per_s"]
    )
    cores = r["projected_examples_per_s"] * r["host_ms_per_example"] / 1e3
    assert abs(r["cores_per_accelerator"] - cores) < 1e-9 * cores
    # the host cost is the sum of its measured parts
    detail = r["host_detail_ms"]
    assert abs(sum(detail.values()) - r["host_ms_per_example"]) < 1e-9 * r["host_ms_per_example"]
    assert r["device_memory_bytes"] == (
        r["memory_detail_bytes"]["argument"]
        + r["memory_detail_bytes"]["output"]
        - r["memory_detail_bytes"]["alias"]
        + r["memory_detail_bytes"]["temp"]
    )
  by = {(r["stage"], r["accelerator"]): r for r in rows}
  # the ResNet-50 teacher sees 224 px whatever the data's size: ~8 GFLOP per face
  assert 5e9 < by[("teacher_embeddings", "H200")]["flops_per_example"] < 12e9
  # masked pairs cost the host more than clean faces
  assert (
      by[("segmentation", "H200")]["host_ms_per_example"]
      > by[("teacher_embeddings", "H200")]["host_ms_per_example"]
  )
  md = out.with_suffix(".md").read_text()
  assert md.count("| segmentation |") == 2 and "cores / accelerator" in md
