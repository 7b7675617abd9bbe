"""The benchmark scripts that model or time the paper's steps run (on CPU, at
toy sizes): ``gpu_paper_sizes.py`` builds the paper config's steps
(``benchmarks/paper_steps.py``), passes the frozen models as the step's
argument as training does, and times them; ``scale_model.py --smoke`` writes
its table with every field, its projections following from its measurements.
(The GPU script had stopped running once the code read every field from the
base config; nothing ran it on CPU.)"""

import importlib.util
import json
import os
import subprocess
import sys
from tests.helpers import paths

ROOT = str(paths.ROOT)
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
  # in this process (its imports are shared with the --merge check below)
  spec = importlib.util.spec_from_file_location(
      "scale_model", os.path.join(ROOT, "benchmarks", "scale_model.py")
  )
  scale_model = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(scale_model)
  out = tmp_path / "scale"
  scale_model.main(["--smoke", f"--out={out}"])
  payload = json.loads(out.with_suffix(".json").read_text())
  rows = payload["stages"]
  assert {(r["stage"], r["accelerator"]) for r in rows} == {
      (s, a) for s in ("teacher_embeddings", "segmentation") for a in ("H200", "TPU v5e")
  }
  host = payload["host"]
  for kind in ("masked", "device", "clean"):  # each kind's cost is the sum of its measured parts
    h = host[kind]
    parts = {k: v for k, v in h.items() if k not in ("host_ms_per_example", "host_ms_decoded")}
    assert len(parts) == 4 and all(v >= 0 for v in parts.values()), (kind, parts)
    jpeg = sum(v for k, v in parts.items() if k != "decoded_read_ms")
    assert abs(jpeg - h["host_ms_per_example"]) < 1e-9 * jpeg
    # the same record read decoded (data/decoded_faces.py) in place of decode + resize
    decoded = jpeg - h["decode_resize_ms"] + h["decoded_read_ms"]
    assert abs(decoded - h["host_ms_decoded"]) < 1e-9 * decoded
  # occluders drawn on the device leave the host decode, flip / shift and batching only
  assert host["device"]["host_ms_per_example"] < host["masked"]["host_ms_per_example"]
  assert payload["occluders"] == {"H200": "device", "TPU v5e": "device"}  # the paper configs
  for r in rows:
    assert all(k in r for k in FIELDS), r
    assert r["px"] == payload["px"] == 32
    for k in FIELDS[2:]:
      assert r[k] > 0, (r["stage"], k, r[k])
    peak = {"H200": 989e12 if r["bf16"] else 494e12, "TPU v5e": 197e12}[r["accelerator"]]
    assert r["peak_flops"] == peak
    # the path the config sets: masked pairs with device occluders add their FLOPs to the step's
    teacher = r["stage"] == "teacher_embeddings"
    assert r["host_kind"] == ("clean" if teacher else "device")
    occ = r["occluder_flops_per_example"]
    assert (occ == 0) if teacher else (0 < occ < 0.05 * r["step_flops_per_example"]), r
    assert r["flops_per_example"] == r["step_flops_per_example"] + occ
    assert abs(r["projected_examples_per_s"] - 0.4 * peak / r["flops_per_example"]) < 1e-9 * (
        r["projected_examples_per_s"]
    )
    assert r["host_ms_per_example"] == host[r["host_kind"]]["host_ms_per_example"]
    cores = r["projected_examples_per_s"] * r["host_ms_per_example"] / 1e3
    assert abs(r["cores_per_accelerator"] - cores) < 1e-9 * cores
    # ... and the same row with host occluders: the step alone, the masked pair's host cost
    before = 0.4 * peak / r["step_flops_per_example"] * r["host_ms_with_host_occluders"] / 1e3
    assert (
        r["host_ms_with_host_occluders"]
        == host["clean" if teacher else "masked"]["host_ms_per_example"]
    )
    assert abs(r["cores_with_host_occluders"] - before) < 1e-9 * before
    dec = r["projected_examples_per_s"] * host[r["host_kind"]]["host_ms_decoded"] / 1e3
    assert abs(r["cores_with_decoded_records"] - dec) < 1e-9 * dec
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
  seg, teach = by[("segmentation", "H200")], by[("teacher_embeddings", "H200")]
  # masked pairs cost the host more than clean faces; device occluders need fewer cores
  assert seg["host_ms_with_host_occluders"] > teach["host_ms_per_example"]
  assert seg["cores_per_accelerator"] < seg["cores_with_host_occluders"]
  assert teach["cores_per_accelerator"] == teach["cores_with_host_occluders"]
  md = out.with_suffix(".md").read_text()
  assert md.count("| segmentation |") == 2 and "cores with host occluders" in md
  assert "cores with decoded records |" in md and "Decoded records (`deocc-prepare`" in md
  assert "| segmentation | H200 (gpu8) | 32 | 1 | float32 | device |" in md

  # --merge re-projects earlier rows with another host measurement (--host)
  other = dict(payload, host=json.loads(json.dumps(host)))
  for kind in ("masked", "device"):
    other["host"][kind]["host_ms_per_example"] *= 3
  (tmp_path / "host.json").write_text(json.dumps(other))
  merged = scale_model.merge(
      [str(out.with_suffix(".json"))],
      str(tmp_path / "merged"),
      str(tmp_path / "host.json"),
      "results",
  )
  assert merged["host_from"] == "host.json" and merged["host_all_runs"][0]["file"] == "host.json"
  for r in merged["stages"]:
    r0 = by[(r["stage"], r["accelerator"])]
    assert r["flops_per_example"] == r0["flops_per_example"]  # not counted twice
    for k in ("cores_per_accelerator", "cores_with_host_occluders"):
      x = 1 if r["stage"] == "teacher_embeddings" else 3
      assert abs(r[k] - x * r0[k]) < 1e-9 * r[k], (r["stage"], k)


def test_seed_spread_report_over_workdirs(tmp_path):
  """``benchmarks/seed_spread.py report`` reads each workdir's results and seed
  and writes the per-seed and over-seed table of every key comparison."""
  import numpy as np

  from deocc_jax.evaluation import seed_spread

  rng = np.random.default_rng(0)
  recs = {r for pair in seed_spread.KEY_COMPARISONS for r, _ in pair}
  kinds = {k for pair in seed_spread.KEY_COMPARISONS for _, k in pair}
  workdirs = []
  for seed in (0, 1, 2):
    w = tmp_path / f"seed{seed}"
    (w / "results").mkdir(parents=True)
    mix = {r: {k: {"fold_accuracies_one": rng.random(10).tolist()} for k in kinds} for r in recs}
    results = {"verification": {"synthetic": {"results": {"mixture": mix}}}}
    (w / "results" / "results.json").write_text(json.dumps(results))
    (w / "config.json").write_text(json.dumps({"seed": seed}))
    workdirs.append(str(w))
  out = tmp_path / "spread"
  spec = importlib.util.spec_from_file_location(
      "seed_spread_script", os.path.join(ROOT, "benchmarks", "seed_spread.py")
  )
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  script.main(["report", "--workdirs", *workdirs, f"--out={out}"])
  payload = json.loads(out.with_suffix(".json").read_text())
  assert payload["seeds"] == [0, 1, 2]
  assert [(r["a"], r["b"]) for r in payload["rows"]] == [
      (list(a), list(b)) for a, b in seed_spread.KEY_COMPARISONS
  ]
  assert all(len(r["runs"]) == 3 for r in payload["rows"])
  table = out.with_suffix(".md").read_text()
  assert "| seed 0 | seed 1 | seed 2 | over seeds | seeds won |" in table
  assert len([l for l in table.splitlines() if l.startswith("| student_")]) == 5
