"""A scale model of the paper config on accelerators, measured on this CPU.

For every training step of ``configs/paper_celeba.py`` as configured (the
``:gpu8`` variant for an H200, ``:tpu_pod`` for a TPU v5e slice: their
per-device batches and bf16 settings; steps built by ``benchmarks/paper_steps.py``):

* FLOPs per example: XLA's cost analysis of the compiled step (compiled for
  XLA:CPU; nothing is executed), the WGAN-GP critic scan counted
  ``n_critic`` times (``paper_steps.analyse``), plus, where the config draws
  the occluders on the device (``config.data.occluders='device'``), the
  device half of the occluder stream that runs beside the step
  (``data/device_occluders_stream.prepare_batch``: XLA's cost analysis of it
  jitted and compiled at the row's px and per-device batch);
* device memory at the per-device batch: the compiled program's buffers
  (arguments + outputs - donated + temporaries). Compiled here for XLA:CPU,
  so these are XLA:CPU's buffer sizes, an estimate of an accelerator's;
* the host's cost per example, measured single-threaded on one core (CPU
  time of the thread) on the rehearsal's CelebA miniature (JPEGs in CelebA's
  layout, ``data/rehearsal.py``), for three kinds of record: reading +
  decoding + crop / resize (``data/real_datasets.CelebA``), then
  'masked': the masked pair with the paper config's MaskConfig
  (``data/pipeline.make_masked_pair``: flip, shift, occluder synthesis,
  compositing) and batching (occluders drawn on the host);
  'device': flip / shift of the face and its landmarks
  (``data/device_occluders_host.prepare_example``) and the device stream's
  batching (``device_occluders_stream.batch_examples``) (occluders drawn on
  the device); 'clean': float conversion and batching (``teacher_embeddings``
  reads clean faces only);
* projected examples/s per accelerator at 40% MFU = 0.4 x peak / FLOPs per
  example (H200: 989 TFLOP/s dense bf16, 494 TF32; TPU v5e: 197 bf16, which
  fp32 matmuls also run at by default), and the host cores per accelerator
  the input pipeline needs = projected examples/s x host seconds per example,
  for the config's occluder path and, beside it, for host occluders.

    python benchmarks/scale_model.py            # the paper's sizes (long: compiles on CPU)
    python benchmarks/scale_model.py --smoke    # tiny sizes, two cheap stages (CI)
    python benchmarks/scale_model.py --host-only --out host   # the host cost alone
    python benchmarks/scale_model.py --merge results/scale_model.json --host results/host.json
                                                # rows of earlier runs, a new host cost

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

from deocc_jax.data import decoded_faces  # noqa: E402
from deocc_jax.data import device_occluders_host as occ_host  # noqa: E402
from deocc_jax.data import device_occluders_stream as occ_stream  # noqa: E402
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
CLEAN_STAGES = ("teacher_embeddings",)  # read clean faces: no occluder on either path
KINDS = ("masked", "device", "clean")
DECODED_KEYS = ("decoded_read_ms", "host_ms_decoded")  # the record read decoded instead
# bench_device_occluders' measurement (photos, 256 px, batch 16): the fallback
# for the device half's FLOPs (``--occluder-flops results``), scaled by area
OCCLUDER_RESULTS = os.path.join(_common.RESULTS, "device_occluders.json")


# ------------------------------------------------------------------ host


def celeba_miniature(root: str, identities: int = 8, images: int = 4) -> str:
  """The rehearsal's CelebA miniature (178 x 218 JPEGs, CelebA's files) under ``root``."""
  faces = SyntheticFaces(identities, images, rehearsal.CELEBA_SIZE[0], 0)
  path = os.path.join(root, "celeba")
  rehearsal.write_celeba(path, faces, 0, identities, images)
  return path


def _stack(items: list[dict]) -> dict:
  return {k: np.stack([x[k] for x in items]) for k in items[0]}


def host_cost(config, px: int, examples: int, batch: int = 16) -> dict[str, dict[str, float]]:
  """Host CPU milliseconds per example on one thread, three kinds of record
  (each: decode + resize, then) 'masked' (masked pair with host occluders +
  batching), 'device' (flip / shift augmentation for the device occluders +
  the device stream's batching) and 'clean' (float conversion + batching)."""
  mask_cfg = pipe.mask_config_from_data(config.data)
  p = config.pipeline
  flip, shift = bool(p.flip), int(p.max_shift_px)
  rng = {k: np.random.default_rng(0) for k in ("masked", "device")}
  collate = {"masked": _stack, "device": occ_stream.batch_examples, "clean": _stack}
  with tempfile.TemporaryDirectory() as tmp:
    source = rd.CelebA(celeba_miniature(tmp), "all", resolution=px)
    decoded = decoded_faces.DecodedFaces(
        decoded_faces.write(source, os.path.join(tmp, "decoded"), {})
    )
    source[0], decoded[0]  # warm-up: imports, caches
    t = {k: 0.0 for k in ("decode", "read_decoded", "mask", "augment", "clean")}
    t.update({f"collate_{k}": 0.0 for k in KINDS})
    items: dict[str, list] = {k: [] for k in KINDS}
    wall = time.perf_counter()
    for i in range(examples):
      t0 = time.thread_time()
      rec = source[i % len(source)]
      t1 = time.thread_time()
      items["masked"].append(pipe.make_masked_pair(rec, rng["masked"], mask_cfg, flip, shift))
      t2 = time.thread_time()
      items["device"].append(occ_host.prepare_example(rec, rng["device"], flip, shift))
      t3 = time.thread_time()
      items["clean"].append(
          {"clean": pipe.to_unit_range(rec["image"]), "identity": rec["identity"]}
      )
      t4 = time.thread_time()
      decoded[i % len(source)]
      t["read_decoded"] += time.thread_time() - t4
      t["decode"] += t1 - t0
      t["mask"] += t2 - t1
      t["augment"] += t3 - t2
      t["clean"] += t4 - t3
      for kind, xs in items.items():
        if len(xs) == batch:
          t0 = time.thread_time()
          collate[kind](xs)
          t[f"collate_{kind}"] += time.thread_time() - t0
          xs.clear()
    wall = time.perf_counter() - wall
  full = examples // batch * batch
  ms = {k: 1e3 * v / (full if k.startswith("collate") else examples) for k, v in t.items()}
  out: dict[str, dict[str, Any]] = {}
  for kind, (name, part) in {
      "masked": ("mask_composite_ms", "mask"),
      "device": ("augment_ms", "augment"),
      "clean": ("convert_ms", "clean"),
  }.items():
    out[kind] = {
        "decode_resize_ms": ms["decode"],
        name: ms[part],
        "collate_ms": ms[f"collate_{kind}"],
        "host_ms_per_example": ms["decode"] + ms[part] + ms[f"collate_{kind}"],
        "decoded_read_ms": ms["read_decoded"],
        "host_ms_decoded": ms["read_decoded"] + ms[part] + ms[f"collate_{kind}"],
    }
  out["meta"] = {
      "examples": examples,
      "wall_s": wall,
      "records": len(source),
      "batch": batch,
      "flip": flip,
      "max_shift_px": shift,
  }
  return out


# ----------------------------------------------------- device occluders

_OCCLUDER_FLOPS: dict[tuple, dict[str, Any]] = {}


def occluder_flops(config, px: int, batch: int, source: str = "compile") -> dict[str, Any]:
  """FLOPs per example of the occluders' device half
  (``device_occluders_stream.prepare_batch``, the config's bank) at ``px``
  and the per-device ``batch``: 'compile' = XLA's cost analysis of it jitted
  and compiled for XLA:CPU (abstract arguments: nothing runs), on the batch
  the CelebA stream makes (5 landmarks, no face region: the device draws the
  ellipse); 'results' = bench_device_occluders' figure at 256 px, scaled by
  area. Cached per (px, batch, source)."""
  key = (px, batch, source)
  if key in _OCCLUDER_FLOPS:
    return _OCCLUDER_FLOPS[key]
  if source == "results":
    with open(OCCLUDER_RESULTS) as f:
      b = json.load(f)["budgets"]
    out = {
        "flops_per_example": b["device_flops_per_example_256"] * (px / 256) ** 2,
        "source": "benchmarks/results/device_occluders.json (256 px, batch 16; scaled by area)",
    }
  elif source == "compile":
    import jax  # noqa: PLC0415 (paper_steps has imported it)
    import jax.numpy as jnp  # noqa: PLC0415

    from deocc_jax.training import occluder_stream  # noqa: PLC0415 (the loop's bank)

    cfg = config.copy_and_resolve_references()
    cfg.data.resolution = px
    t = time.perf_counter()
    bank = occluder_stream.build_bank(cfg)
    bank_s = time.perf_counter() - t
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    host_batch = {
        "image": jax.ShapeDtypeStruct((batch, px, px, 3), jnp.uint8),
        "landmarks": jax.ShapeDtypeStruct((batch, 5, 2), jnp.float32),
        "identity": jax.ShapeDtypeStruct((batch,), jnp.int32),
    }
    t = time.perf_counter()
    lowered = jax.jit(occ_stream.prepare_batch).lower(
        jax.tree_util.tree_map(spec, bank), host_batch, jax.random.key(0)
    )
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    cost = compiled.cost_analysis()
    cost = dict((cost[0] if isinstance(cost, (list, tuple)) else cost) or {})
    mem = compiled.memory_analysis()
    size = lambda n: int(getattr(mem, f"{n}_size_in_bytes", 0) or 0) if mem else 0  # noqa: E731
    out = {
        "flops_per_example": float(cost.get("flops", 0.0)) / batch,
        "source": "XLA cost analysis of jax.jit(device_occluders_stream.prepare_batch), "
        "compiled for XLA:CPU",
        "bank_entries": int(bank.rgb.shape[0]),
        "bank_grid": int(bank.rgb.shape[1]),
        "bank_bytes": int(sum(x.nbytes for x in jax.tree_util.tree_leaves(bank))),
        "memory_bytes": size("argument") + size("output") - size("alias") + size("temp"),
        "bank_build_s": bank_s,
        "compile_s": compile_s,
    }
  else:
    raise ValueError(f"occluder FLOPs source must be 'compile' or 'results', got {source!r}")
  out.update(px=px, per_device_batch=batch)
  _OCCLUDER_FLOPS[key] = out
  return out


def host_kind(stage: str, occluders: str) -> str:
  """The host record a stage reads: 'clean', or its masked pairs' path."""
  if stage in CLEAN_STAGES:
    return "clean"
  return {"device": "device", "host": "masked"}[occluders]


# --------------------------------------------------------------- devices


def _gib(x: float) -> str:
  return f"{x / 2**30:.2f}"


def _cores(x: float) -> str:
  return f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def project(
    stage: str, px: int, analysis: dict, batch: int, dtype: str, acc: str
) -> dict[str, Any]:
  """One row's step part: FLOPs / memory per device (see :func:`host_columns`)."""
  a = ACCELERATORS[acc]
  bf16 = dtype == "bfloat16"
  return {
      "stage": stage,
      "px": px,
      "step_flops_per_example": analysis["flops"] / batch,
      "device_memory_bytes": analysis["device_memory_bytes"],
      "accelerator": acc,
      "variant": a["variant"],
      "devices": a["devices"],
      "per_device_batch": batch,
      "dtype": dtype,
      "bf16": bf16,
      "peak_flops": a["bf16"] if bf16 else a["fp32"],
      "mfu": MFU,
      "accelerator_memory_bytes": a["memory"],
      "flops_counted_per_example": analysis["flops_counted"] / batch,
      "critic_update_flops": analysis.get("critic_update_flops"),
      "critic_scan_counted_once": analysis.get("critic_scan_counted_once"),
      "memory_detail_bytes": {
          k: analysis[f"{k}_bytes"] for k in ("argument", "output", "alias", "temp")
      },
      "device_memory_source": "XLA:CPU compiled buffer sizes (memory_analysis)",
      "compile_s": analysis["compile_s"],
  }


def host_columns(row: dict, host: dict, occluders: str, occ: dict | None) -> dict:
  """Fills ``row``'s projection for the config's occluder path (``occluders``;
  ``occ``: :func:`occluder_flops`, added to the step's FLOPs when they are
  drawn on the device) and for host occluders (the step alone, 'masked')."""
  step = row.get("step_flops_per_example", row.get("flops_per_example"))
  kind = host_kind(row["stage"], occluders)
  extra = occ["flops_per_example"] if kind == "device" else 0.0
  h = host[kind]
  hh = host[host_kind(row["stage"], "host")]
  row.update(
      step_flops_per_example=step,
      occluders=occluders,
      host_kind=kind,
      occluder_flops_per_example=extra,
      occluder_flops_source=occ["source"] if kind == "device" else None,
      flops_per_example=step + extra,
      projected_examples_per_s=MFU * row["peak_flops"] / (step + extra),
      host_ms_per_example=h["host_ms_per_example"],
      host_detail_ms={
          k: v for k, v in h.items() if k not in DECODED_KEYS + ("host_ms_per_example",)
      },
      projected_examples_per_s_with_host_occluders=MFU * row["peak_flops"] / step,
      host_ms_with_host_occluders=hh["host_ms_per_example"],
  )
  row["cores_per_accelerator"] = row["projected_examples_per_s"] * row["host_ms_per_example"] / 1e3
  if "host_ms_decoded" in h:  # the same records read decoded (data/decoded_faces.py)
    row["host_ms_decoded_records"] = h["host_ms_decoded"]
    row["cores_with_decoded_records"] = row["projected_examples_per_s"] * h["host_ms_decoded"] / 1e3
  row["cores_with_host_occluders"] = (
      row["projected_examples_per_s_with_host_occluders"] * row["host_ms_with_host_occluders"] / 1e3
  )
  return row


def _runs_note(runs: list[dict]) -> str:
  """The host measurement of each run joined into the table."""

  def ms(r: dict, k: str) -> str:
    return f"{r[k]:.1f}" if r.get(k) is not None else "-"

  return (
      "The host measurement of each run joined here (file, examples, load at start: ms per "
      "masked / device / clean example; '-': not measured in that run): "
      + "; ".join(
          f"{r['file']}, {r['examples']}, {r['loadavg_at_start'][0]}: {ms(r, 'masked_ms')} / "
          f"{ms(r, 'device_ms')} / {ms(r, 'clean_ms')}"
          for r in runs
      )
      + f". The table uses the first ({runs[0]['file']}); the steps were compiled in "
      "parallel runs."
  )


def markdown(payload: dict) -> str:
  m = payload["machine"]
  rows = payload["stages"]
  host = payload["host"]
  hm = payload.get("host_machine", m)
  decoded = all("cores_with_decoded_records" in r for r in rows)
  lines = [
      "# Scale model: the paper config on accelerators",
      f"Machine: {m['cpu']}, {m['cores']} cores, load at start {m['loadavg_at_start']}, "
      f"{m['date']}; jax {m.get('jax', '?')}. Mode: {payload['mode']}.",
  ]
  if hm is not m:
    lines.append(
        f"Host cost measured later, alone: load at start {hm['loadavg_at_start']}, {hm['date']}."
    )
  sources = sorted({r["occluder_flops_source"] for r in rows if r["occluder_flops_source"]})
  paths = ", ".join(
      f"{a} `{v}`" for a, v in sorted({(r["accelerator"], r["occluders"]) for r in rows})
  )
  lines += [
      "",
      "FLOPs: XLA's cost analysis of each compiled step (compiled for XLA:CPU, not run; "
      "the 5 WGAN-GP critic updates counted 5 times), plus, for masked pairs whose "
      "occluders are drawn on the device, the device half of the occluder stream that runs "
      "beside the step (`device_occluders_stream.prepare_batch` at the row's px and "
      f"per-device batch; {'; '.join(sources) or 'none here'}). Memory: the compiled step's "
      "buffers at the per-device batch (XLA:CPU buffer sizes, an estimate). Host: CPU "
      "time of one thread per example on the rehearsal's CelebA miniature: JPEG decode + "
      "crop / resize, then the masked pair with the paper's MaskConfig and batching (host "
      "occluders), or the flip / shift of the face and its landmarks and the device "
      "stream's batching (device occluders), or float conversion and batching (clean faces, "
      "teacher_embeddings). Projected: 40% MFU of the peak (H200 989 TFLOP/s bf16 / 494 "
      "TF32; TPU v5e 197); cores = projected examples/s x host seconds per example. Occluder "
      f"path (`config.data.occluders`): {paths}; 'with host occluders': the same row with "
      "host occluders (the step's FLOPs alone, the masked pair's host cost)"
      + ("; 'with decoded records': the config's path reading decoded faces." if decoded else "."),
      "",
      "| stage | accelerator (variant) | px | batch / device | dtype | host path | GFLOP / "
      "example (step + occluders) | memory / device (GiB, XLA:CPU) | projected examples/s "
      "| host ms / example (1 core) | cores / accelerator | host ms with host occluders "
      "| cores with host occluders |" + (" cores with decoded records |" if decoded else ""),
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if decoded else ""),
  ]
  for r in rows:
    gflop = f"{r['step_flops_per_example'] / 1e9:.1f}"
    if r["occluder_flops_per_example"]:
      gflop += f" + {r['occluder_flops_per_example'] / 1e9:.2f}"
    lines.append(
        f"| {r['stage']} | {r['accelerator']} ({r['variant']}) | {r['px']} | "
        f"{r['per_device_batch']} | {r['dtype']} | {r['host_kind']} | {gflop} | "
        f"{_gib(r['device_memory_bytes'])} | {r['projected_examples_per_s']:,.0f} | "
        f"{r['host_ms_per_example']:.1f} | {_cores(r['cores_per_accelerator'])} | "
        f"{r['host_ms_with_host_occluders']:.1f} | {_cores(r['cores_with_host_occluders'])} |"
        + (f" {_cores(r['cores_with_decoded_records'])} |" if decoded else "")
    )
  hm_, hd, hc = host["masked"], host["device"], host["clean"]
  lines += [
      "",
      f"Host cost per example at {payload['px']} px (ms, one core, mean of "
      f"{host['meta']['examples']} examples): masked pair with host occluders = decode + "
      f"resize {hm_['decode_resize_ms']:.2f} + occluder synthesis and compositing "
      f"{hm_['mask_composite_ms']:.2f} + batching {hm_['collate_ms']:.2f} = "
      f"{hm_['host_ms_per_example']:.2f}; for device occluders = {hd['decode_resize_ms']:.2f} "
      f"+ flip / shift {hd['augment_ms']:.2f} + batching {hd['collate_ms']:.2f} = "
      f"{hd['host_ms_per_example']:.2f}; clean face = {hc['decode_resize_ms']:.2f} + "
      f"{hc['convert_ms']:.2f} + {hc['collate_ms']:.2f} = {hc['host_ms_per_example']:.2f}.",
  ]
  if decoded:
    lines.append(
        f"Decoded records (`deocc-prepare`, `config.data.decoded_root`; "
        "`data/decoded_faces.py`: the same faces, already cropped and resized, raw uint8 in "
        f"array_record): reading one costs {hc['decoded_read_ms']:.3f} ms instead of the "
        f"{hc['decode_resize_ms']:.2f} ms JPEG decode + resize, so a clean face costs "
        f"{hc['host_ms_decoded']:.2f} ms and a face for device occluders "
        f"{hd['host_ms_decoded']:.2f} ms (last column)."
    )
  occ = payload.get("occluder_flops", [])
  if occ:
    lines.append(
        "Device occluders per example (GFLOP, px / per-device batch): "
        + "; ".join(
            f"{o['flops_per_example'] / 1e9:.3f} ({o['px']} / {o['per_device_batch']})" for o in occ
        )
        + (
            f"; bank {occ[0]['bank_entries']} entries on a {occ[0]['bank_grid']}^2 grid, "
            f"{occ[0]['bank_bytes'] / 2**20:.0f} MiB on each device (not in the memory column)"
            if "bank_entries" in occ[0]
            else ""
        )
        + ". They are projected at the step's peak with it (mostly fp32 elementwise work, "
        "not matmuls), a negligible share either way."
    )
  runs = payload.get("host_all_runs", [])
  if len(runs) > 1:
    lines.append(_runs_note(runs))
  lines += [
      "Not modelled: "
      + "; ".join(f"`{k}` ({v})" for k, v in payload["not_modelled"].items())
      + ".",
  ]
  return "\n".join(lines)


def occluder_mode(config) -> str:
  """``config.data.occluders`` ('host' when the config predates the field)."""
  return str(config.data.get("occluders", "host"))


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
  ap.add_argument("--host", default=None, help="with --merge: the host cost of this JSON file")
  ap.add_argument(
      "--occluder-flops",
      choices=("compile", "results"),
      default=None,
      help="device occluders' FLOPs: compile prepare_batch (default) or take "
      "device_occluders.json's (default with --smoke)",
  )
  args = ap.parse_args(argv)
  occ_source = args.occluder_flops or ("results" if args.smoke else "compile")
  if args.merge:
    merge(args.merge, args.out, args.host, occ_source)
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
      "occluders": {k: occluder_mode(c) for k, c in configs.items()},
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
      row = project(stage, px, cache[key], b, step.dtype, acc)
      mode = occluder_mode(cfg)
      device = host_kind(stage, mode) == "device"
      host_columns(row, host, mode, occluder_flops(cfg, px, b, occ_source) if device else None)
      payload["stages"].append(row)
      payload["occluder_flops"] = _occluder_list()
      print(
          f"{stage} {acc}: {row['flops_per_example'] / 1e9:.1f} GFLOP/example, "
          f"{_gib(row['device_memory_bytes'])} GiB, {row['projected_examples_per_s']:.0f} "
          f"examples/s, {row['cores_per_accelerator']:.1f} cores "
          f"({row['cores_with_host_occluders']:.1f} with host occluders; "
          f"compile {cache[key]['compile_s']:.0f} s)",
          flush=True,
      )
      _save(args.out, payload)  # progress: a partial table survives an interruption
  _common.write(args.out, payload, markdown(payload))


def _occluder_list() -> list[dict]:
  return [_OCCLUDER_FLOPS[k] for k in sorted(_OCCLUDER_FLOPS)]


def _save(out: str, payload: dict) -> None:
  path = out if os.path.isabs(out) else os.path.join(_common.RESULTS, out)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".json", "w") as f:
    json.dump(payload, f, indent=2)


def _run_entry(path: str, p: dict) -> dict:
  h = p["host"]
  return {
      "file": os.path.basename(path),
      "examples": h["meta"]["examples"],
      "loadavg_at_start": p["machine"]["loadavg_at_start"],
      "masked_ms": h["masked"]["host_ms_per_example"],
      "device_ms": h["device"]["host_ms_per_example"] if "device" in h else None,
      "clean_ms": h["clean"]["host_ms_per_example"],
  }


def merge(
    files: list[str], out: str, host_file: str | None = None, occluder_source: str = "compile"
) -> dict:
  """One table from runs of stage subsets (e.g. compiled in parallel, or an
  earlier merged table): rows in ``STAGES`` order, each re-projected with one
  host measurement, ``host_file``'s (a ``--host-only`` run) or else the first
  file's, for the occluder path the paper config sets now (its device FLOPs:
  :func:`occluder_flops` with ``occluder_source``) and for host occluders."""
  parts = []
  for path in files:
    with open(path) as f:
      parts.append(json.load(f))
  payload = dict(
      parts[0],
      stages=[],
      merged_from=[n for path, p in zip(files, parts) for n in p.get("merged_from") or [path]],
  )
  payload["merged_from"] = [os.path.basename(n) for n in payload["merged_from"]]
  runs = [
      r for path, p in zip(files, parts) for r in p.get("host_all_runs") or [_run_entry(path, p)]
  ]
  if host_file:
    with open(host_file) as f:
      hp = json.load(f)
    if hp["px"] != payload["px"]:
      raise ValueError(f"host cost measured at {hp['px']} px, the rows are at {payload['px']} px")
    payload.update(
        host=hp["host"], host_machine=hp["machine"], host_from=os.path.basename(host_file)
    )
    runs = [_run_entry(host_file, hp)] + [r for r in runs if r["file"] != payload["host_from"]]
  host = payload["host"]
  if "device" not in host:
    raise ValueError("the host measurement lacks the 'device' kind: measure it with --host-only")
  rows = [r for p in parts for r in p["stages"]]
  order = {s: i for i, s in enumerate(paper_steps.STAGES)}
  rows.sort(
      key=lambda r: (order.get(r["stage"], len(order)), list(ACCELERATORS).index(r["accelerator"]))
  )
  configs: dict[str, Any] = {}
  _OCCLUDER_FLOPS.clear()
  for r in rows:
    if r["variant"] not in configs:
      configs[r["variant"]] = paper_steps.paper_config(r["variant"])
    cfg = configs[r["variant"]]
    mode = occluder_mode(cfg)
    device = host_kind(r["stage"], mode) == "device"
    occ = occluder_flops(cfg, r["px"], r["per_device_batch"], occluder_source) if device else None
    host_columns(r, host, mode, occ)
  payload["stages"] = rows
  payload["occluders"] = {
      acc: occluder_mode(configs[a["variant"]])
      for acc, a in payload["accelerators"].items()
      if a["variant"] in configs
  }
  payload["occluder_flops"] = _occluder_list()
  payload["host_all_runs"] = runs
  _common.write(out, payload, markdown(payload))
  return payload


if __name__ == "__main__":
  main()
