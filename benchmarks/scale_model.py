"""A scale model of the paper config on accelerators, measured on this CPU.

For every training step of ``configs/paper_celeba.py`` as configured (the
``:gpu8`` variant for an H200, ``:tpu_pod`` for a TPU v5e slice: their
per-device batches and bf16 settings; steps built by ``benchmarks/paper_steps.py``):

* FLOPs per example: XLA's cost analysis of the compiled step (compiled for
  XLA:CPU; nothing is executed), the WGAN-GP critic scan counted
  ``n_critic`` times (``paper_steps.analyse``);
* device memory at the per-device batch: the compiled program's buffers
  (arguments + outputs - donated + temporaries). Compiled here for XLA:CPU,
  so these are XLA:CPU's buffer sizes, an estimate of an accelerator's;
* the host's cost per example, measured single-threaded on one core (CPU
  time of the thread) on the rehearsal's CelebA miniature (JPEGs in CelebA's
  layout, ``data/rehearsal.py``): reading + decoding + crop / resize
  (``data/real_datasets.CelebA``), the masked pair with the paper config's
  MaskConfig (``data/pipeline.make_masked_pair``: flip, shift, occluder
  synthesis, compositing) and batching; ``teacher_embeddings`` reads clean
  faces only;
* projected examples/s per accelerator at 40% MFU = 0.4 x peak / FLOPs per
  example (H200: 989 TFLOP/s dense bf16, 494 TF32; TPU v5e: 197 bf16, which
  fp32 matmuls also run at by default), and the host cores per accelerator
  the input pipeline needs = projected examples/s x host seconds per example.

    python benchmarks/scale_model.py            # the paper's sizes (long: compiles on CPU)
    python benchmarks/scale_model.py --smoke    # tiny sizes, two cheap stages (CI)

Writes ``benchmarks/results/scale_model.{json,md}`` (``--out`` another stem).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import paper_steps  # noqa: E402

from deocc_jax.data import pipeline as pipe  # noqa: E402
from deocc_jax.data import real_datasets as rd  # noqa: E402
from deocc_jax.data import rehearsal  # noqa: E402
from deocc_jax.data.synthetic_faces import SyntheticFaces  # noqa: E402

MFU = 0.4
ACCELERATORS = {
    # name: config variant, devices the variant's global batch splits over,
    # peak dense FLOP/s (bf16, fp32 as run by default), memory per device
    "H200": dict(variant="gpu8", devices=8, bf16=989e12, fp32=494e12, memory=141e9),
    "TPU v5e": dict(variant="tpu_pod", devices=16, bf16=197e12, fp32=197e12, memory=16 * 2**30),
}
SMOKE_STAGES = ("teacher_embeddings", "segmentation")


# ------------------------------------------------------------------ host


def celeba_miniature(root: str, identities: int = 8, images: int = 4) -> str:
  """The rehearsal's CelebA miniature (178 x 218 JPEGs, CelebA's files) under ``root``."""
  faces = SyntheticFaces(identities, images, rehearsal.CELEBA_SIZE[0], 0)
  path = os.path.join(root, "celeba")
  rehearsal.write_celeba(path, faces, 0, identities, images)
  return path


def host_cost(config, px: int, examples: int, batch: int = 16) -> dict[str, dict[str, float]]:
  """Host CPU milliseconds per example on one thread, two kinds of record:
  'masked' (decode + resize + masked pair + batching) and 'clean' (decode +
  resize + float conversion + batching)."""
  mask_cfg = pipe.mask_config_from_data(config.data)
  p = config.pipeline
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as tmp:
    source = rd.CelebA(celeba_miniature(tmp), "all", resolution=px)
    source[0]  # warm-up: imports, caches
    t = {k: 0.0 for k in ("decode", "mask", "clean", "collate_masked", "collate_clean")}
    wall = time.perf_counter()
    pairs, cleans = [], []
    for i in range(examples):
      t0 = time.thread_time()
      rec = source[i % len(source)]
      t1 = time.thread_time()
      pairs.append(pipe.make_masked_pair(rec, rng, mask_cfg, bool(p.flip), int(p.max_shift_px)))
      t2 = time.thread_time()
      cleans.append({"clean": pipe.to_unit_range(rec["image"]), "identity": rec["identity"]})
      t3 = time.thread_time()
      t["decode"] += t1 - t0
      t["mask"] += t2 - t1
      t["clean"] += t3 - t2
      for name, items in (("collate_masked", pairs), ("collate_clean", cleans)):
        if len(items) == batch:
          t0 = time.thread_time()
          {k: np.stack([x[k] for x in items]) for k in items[0]}
          t[name] += time.thread_time() - t0
          items.clear()
    wall = time.perf_counter() - wall
  full = examples // batch * batch
  ms = {k: 1e3 * v / (full if k.startswith("collate") else examples) for k, v in t.items()}
  return {
      "masked": {
          "decode_resize_ms": ms["decode"],
          "mask_composite_ms": ms["mask"],
          "collate_ms": ms["collate_masked"],
          "host_ms_per_example": ms["decode"] + ms["mask"] + ms["collate_masked"],
      },
      "clean": {
          "decode_resize_ms": ms["decode"],
          "convert_ms": ms["clean"],
          "collate_ms": ms["collate_clean"],
          "host_ms_per_example": ms["decode"] + ms["clean"] + ms["collate_clean"],
      },
      "meta": {"examples": examples, "wall_s": wall, "records": len(source)},
  }


# --------------------------------------------------------------- devices


def _gib(x: float) -> str:
  return f"{x / 2**30:.2f}"


def project(
    stage: str, px: int, host: dict, analysis: dict, batch: int, dtype: str, acc: str
) -> dict[str, Any]:
  """One row: FLOPs / memory per device, projected throughput, cores."""
  a = ACCELERATORS[acc]
  bf16 = dtype == "bfloat16"
  peak = a["bf16"] if bf16 else a["fp32"]
  flops = analysis["flops"] / batch
  projected = MFU * peak / flops
  host_ms = host["host_ms_per_example"]
  return {
      "stage": stage,
      "px": px,
      "host_ms_per_example": host_ms,
      "flops_per_example": flops,
      "device_memory_bytes": analysis["device_memory_bytes"],
      "projected_examples_per_s": projected,
      "cores_per_accelerator": projected * host_ms / 1e3,
      "accelerator": acc,
      "variant": a["variant"],
      "devices": a["devices"],
      "per_device_batch": batch,
      "dtype": dtype,
      "bf16": bf16,
      "peak_flops": peak,
      "mfu": MFU,
      "accelerator_memory_bytes": a["memory"],
      "host_kind": "clean" if stage == "teacher_embeddings" else "masked",
      "host_detail_ms": {k: v for k, v in host.items() if k != "host_ms_per_example"},
      "flops_counted_per_example": analysis["flops_counted"] / batch,
      "critic_update_flops": analysis.get("critic_update_flops"),
      "critic_scan_counted_once": analysis.get("critic_scan_counted_once"),
      "memory_detail_bytes": {
          k: analysis[f"{k}_bytes"] for k in ("argument", "output", "alias", "temp")
      },
      "device_memory_source": "XLA:CPU compiled buffer sizes (memory_analysis)",
      "compile_s": analysis["compile_s"],
  }


def markdown(payload: dict) -> str:
  m = payload["machine"]
  rows = payload["stages"]
  host = payload["host"]
  lines = [
      "# Scale model: the paper config on accelerators",
      f"Machine: {m['cpu']}, {m['cores']} cores, load at start {m['loadavg_at_start']}, "
      f"{m['date']}; jax {m.get('jax', '?')}. Mode: {payload['mode']}.",
      "",
      "FLOPs: XLA's cost analysis of each compiled step (compiled for XLA:CPU, not run; "
      "the 5 WGAN-GP critic updates counted 5 times). Memory: the compiled program's "
      "buffers at the per-device batch (XLA:CPU buffer sizes, an estimate). Host: CPU "
      "time of one thread per example on the rehearsal's CelebA miniature (JPEG decode + "
      "crop / resize, masked pair with the paper's MaskConfig, batching). Projected: 40% "
      "MFU of the peak (H200 989 TFLOP/s bf16 / 494 TF32; TPU v5e 197); cores = projected "
      "examples/s x host seconds per example.",
      "",
      "| stage | accelerator (variant) | px | batch / device | dtype | host ms / example "
      "(1 core) | GFLOP / example | memory / device (GiB, XLA:CPU) | projected examples/s "
      "| cores / accelerator |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
        f"| {r['stage']} | {r['accelerator']} ({r['variant']}) | {r['px']} | "
        f"{r['per_device_batch']} | {r['dtype']} | {r['host_ms_per_example']:.1f} | "
        f"{r['flops_per_example'] / 1e9:.1f} | {_gib(r['device_memory_bytes'])} | "
        f"{r['projected_examples_per_s']:,.0f} | {r['cores_per_accelerator']:,.0f} |"
    )
  hm, hc = host["masked"], host["clean"]
  lines += [
      "",
      f"Host cost per example at {payload['px']} px (ms, one core, mean of "
      f"{host['meta']['examples']} examples): masked pair = decode + resize "
      f"{hm['decode_resize_ms']:.2f} + occluder synthesis and compositing "
      f"{hm['mask_composite_ms']:.2f} + batching {hm['collate_ms']:.2f}; clean face = "
      f"{hc['decode_resize_ms']:.2f} + {hc['convert_ms']:.2f} + {hc['collate_ms']:.2f}.",
  ]
  runs = payload.get("host_all_runs", [])
  if len(runs) > 1:
    lines.append(
        "The same host measurement in each run joined here (examples, load at start: ms per "
        "masked / clean example): "
        + "; ".join(
            f"{r['examples']}, {r['loadavg_at_start'][0]}: {r['masked_ms']:.1f} / "
            f"{r['clean_ms']:.1f}"
            for r in runs
        )
        + ". The table uses the first; the steps were compiled in parallel runs."
    )
  lines += [
      "Not modelled: "
      + "; ".join(f"`{k}` ({v})" for k, v in payload["not_modelled"].items())
      + ".",
  ]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--smoke", action="store_true", help="tiny sizes, two cheap stages (CI)")
  ap.add_argument("--stages", nargs="+", default=None, help="default: every step (smoke: two)")
  ap.add_argument("--px", type=int, default=None, help="default: config.data.resolution")
  ap.add_argument("--batch", type=int, default=None, help="per-device batch for every stage")
  ap.add_argument("--host-examples", type=int, default=None)
  ap.add_argument("--tpu-chips", type=int, default=16, help="chips of the tpu_pod slice")
  ap.add_argument("--accelerators", nargs="+", default=list(ACCELERATORS))
  ap.add_argument("--out", default="scale_model", help="results file stem (or path)")
  ap.add_argument("--host-only", action="store_true", help="measure the host cost only")
  ap.add_argument("--merge", nargs="+", default=None, help="JSON files of partial runs to join")
  args = ap.parse_args(argv)
  if args.merge:
    merge(args.merge, args.out)
    return
  ACCELERATORS["TPU v5e"]["devices"] = args.tpu_chips
  stage_names = args.stages or (SMOKE_STAGES if args.smoke else paper_steps.STAGES)
  configs = {
      acc: paper_steps.paper_config(ACCELERATORS[acc]["variant"]) for acc in args.accelerators
  }
  px = args.px or (32 if args.smoke else int(next(iter(configs.values())).data.resolution))
  batch_override = args.batch or (1 if args.smoke else None)
  examples = args.host_examples or (16 if args.smoke else 160)
  info = _common.machine()
  payload: dict[str, Any] = {
      "machine": info,
      "mode": "smoke (tiny sizes; numbers are not the paper's)" if args.smoke else "paper sizes",
      "px": px,
      "mfu": MFU,
      "accelerators": {k: ACCELERATORS[k] for k in args.accelerators},
      "not_modelled": paper_steps.NOT_STEPS,
      "stages": [],
  }
  t = time.perf_counter()
  host = host_cost(next(iter(configs.values())), px, examples)
  payload["host"] = host
  print(f"host cost measured in {time.perf_counter() - t:.0f} s: {host}", flush=True)
  if args.host_only:
    _save(args.out, payload)
    return
  cache: dict[tuple, dict] = {}
  for stage in stage_names:
    for acc in args.accelerators:
      cfg = configs[acc]
      b = batch_override or paper_steps.per_device_batch(cfg, stage, ACCELERATORS[acc]["devices"])
      step = paper_steps.build_step(cfg, stage, px, b)
      key = (stage, b, step.dtype)  # the variants' steps differ in batch and dtype only
      if key not in cache:
        t = time.perf_counter()
        cache[key] = paper_steps.analyse(step)
        cache[key]["compile_s"] = time.perf_counter() - t
      kind = "clean" if stage == "teacher_embeddings" else "masked"
      row = project(stage, px, host[kind], cache[key], b, step.dtype, acc)
      payload["stages"].append(row)
      print(
          f"{stage} {acc}: {row['flops_per_example'] / 1e9:.1f} GFLOP/example, "
          f"{_gib(row['device_memory_bytes'])} GiB, {row['projected_examples_per_s']:.0f} "
          f"examples/s, {row['cores_per_accelerator']:.1f} cores "
          f"(compile {cache[key]['compile_s']:.0f} s)",
          flush=True,
      )
      _save(args.out, payload)  # progress: a partial table survives an interruption
  _common.write(args.out, payload, markdown(payload))


def _save(out: str, payload: dict) -> None:
  path = out if os.path.isabs(out) else os.path.join(_common.RESULTS, out)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".json", "w") as f:
    json.dump(payload, f, indent=2)


def merge(files: list[str], out: str) -> dict:
  """One table from runs of stage subsets (e.g. compiled in parallel): the
  first file's host measurement (and machine) for every row, rows in
  ``STAGES`` order."""
  parts = []
  for path in files:
    with open(path) as f:
      parts.append(json.load(f))
  payload = dict(parts[0], stages=[], merged_from=[os.path.basename(p) for p in files])
  host = payload["host"]
  rows = [r for p in parts for r in p["stages"]]
  order = {s: i for i, s in enumerate(paper_steps.STAGES)}
  rows.sort(
      key=lambda r: (order.get(r["stage"], len(order)), list(ACCELERATORS).index(r["accelerator"]))
  )
  for r in rows:
    h = host[r["host_kind"]]
    r["host_ms_per_example"] = h["host_ms_per_example"]
    r["host_detail_ms"] = {k: v for k, v in h.items() if k != "host_ms_per_example"}
    r["cores_per_accelerator"] = r["projected_examples_per_s"] * r["host_ms_per_example"] / 1e3
  payload["stages"] = rows
  payload["host_all_runs"] = [
      {
          "file": os.path.basename(path),
          "examples": p["host"]["meta"]["examples"],
          "loadavg_at_start": p["machine"]["loadavg_at_start"],
          "masked_ms": p["host"]["masked"]["host_ms_per_example"],
          "clean_ms": p["host"]["clean"]["host_ms_per_example"],
      }
      for path, p in zip(files, parts)
  ]
  _common.write(out, payload, markdown(payload))
  return payload


if __name__ == "__main__":
  main()
