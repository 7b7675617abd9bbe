"""Occluders on the device vs today's host synthesis, side by side in one run.

Usage::

    python benchmarks/bench_device_occluders.py [--examples 48] [--batch 16] [--sizes 64,128,256]

Per resolution, on the synthetic faces and on real photos (face_recognition
1.3.0's test photos, cropped around dlib's 68 landmarks; skipped when the
photos or dlib are missing), measured on one core:

* today: ``masks.synthesize_occlusion`` + ``masks.composite`` with the paper
  config's settings (``MaskConfig()``: photometric, face masks 0.2, 68-point
  face masks on the photos), ms per example (median);
* the new host part: ``device_occluders_host.prepare_example`` (flip,
  landmarks, face region) + ``stack_batch``, ms per example (median);
* the device part, jitted on this CPU, ms per example (median of 3 batches),
  and its FLOPs per example from XLA's cost analysis, against the budgets
  (10% of the de-occlusion step's 192 GFLOP per example at 256 px, 5% of the
  distillation step's 50 GFLOP per example at 224 px).

Also: per-category mean coverage at 64 px (host vs device, same faces) and a
contact sheet (``docs/device_occluders_contact.png``: clean | host | device
rows). Writes ``benchmarks/results/device_occluders.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # the repository root: tests.helpers

import _common  # noqa: E402

from deocc_jax.data import device_occluders as do  # noqa: E402
from deocc_jax.data import device_occluders_bank as bank_lib  # noqa: E402
from deocc_jax.data import device_occluders_host as host_lib  # noqa: E402
from deocc_jax.data import masks as mk  # noqa: E402
from deocc_jax.data.synthetic_faces import SyntheticFaces  # noqa: E402

DEOCC_GFLOP_256 = 192.0  # per example, the de-occlusion step (scale model, issue figures)
DISTILL_GFLOP_224 = 50.0  # per example, the distillation step


def synthetic_records(px: int, n: int) -> list[dict]:
  ds = SyntheticFaces(identities=max(n, 2), images_per_identity=2, resolution=px, seed=11)
  return [ds[2 * i + (i % 2)] for i in range(n)]


def photo_records(px: int) -> list[dict]:
  """The real photos cropped to px x px around the face, with 68 landmarks."""
  try:
    from tests.helpers.photos import face_photos

    from deocc_jax.data import alignment
    from deocc_jax.data import dense_landmarks as dl
  except Exception:  # noqa: BLE001
    return []
  out = []
  for img in face_photos().values():
    s = 480 / max(img.shape[:2])
    small = np.asarray(
        Image.fromarray(img).resize((round(img.shape[1] * s), round(img.shape[0] * s)))
    )
    try:
      dense = alignment.detect_landmarks68_dlib(small)[0]
    except Exception:  # noqa: BLE001 (dlib missing)
      return []
    five = dl.canonical5_from_68(dense)
    c, iod = five.mean(0), np.hypot(*(five[1] - five[0]))
    half = 1.7 * iod
    box = (c[0] - half, c[1] - half, c[0] + half, c[1] + half)
    crop = np.asarray(Image.fromarray(small).resize((px, px), Image.BILINEAR, box=box))
    k = px / (2 * half)
    d = (dense - [box[0], box[1]]) * k - 0.5 * (1 - k)
    out.append(
        {
            "image": crop,
            "landmarks": dl.canonical5_from_68(d).astype(np.float32),
            "landmarks68": d.astype(np.float32),
            "identity": 0,
        }
    )
  return out


def host_today(recs, reps: int) -> tuple[list[float], list]:
  rng = np.random.default_rng(0)
  times, outs = [], []
  for k in range(reps):
    r = recs[k % len(recs)]
    t = time.perf_counter()
    region = r.get("face_region")
    if region is None:
      region = mk.face_region_from_landmarks(r["landmarks"], *r["image"].shape[:2])
    occ = mk.synthesize_occlusion(
        rng, r["landmarks"], region, mk.MaskConfig(), dense_landmarks=r.get("landmarks68")
    )
    out = mk.composite(r["image"], occ)
    times.append(time.perf_counter() - t)
    outs.append((out, occ, region))
  return times, outs


def host_new(recs, reps: int) -> list[float]:
  rng = np.random.default_rng(0)
  times = []
  for k in range(reps):
    t = time.perf_counter()
    ex = host_lib.prepare_example(recs[k % len(recs)], rng)
    host_lib.stack_batch([ex])
    times.append(time.perf_counter() - t)
  return times


def device_part(bank, recs, batch: int) -> dict:
  exs = [
      host_lib.prepare_example(recs[i % len(recs)], np.random.default_rng(i)) for i in range(batch)
  ]
  b = host_lib.stack_batch(exs)
  args = [bank, jnp.asarray(b["image"]), jnp.asarray(b["landmarks"]), jax.random.key(0)]
  if "face_region" in b:
    args.append(jnp.asarray(b["face_region"]))
  t = time.perf_counter()
  comp = jax.jit(do.synthesize_details).lower(*args).compile()
  compile_s = time.perf_counter() - t
  ca = comp.cost_analysis()
  ca = ca[0] if isinstance(ca, (list, tuple)) else ca
  jax.block_until_ready(comp(*args))
  ts = []
  for k in range(3):
    args[3] = jax.random.key(k + 1)
    t = time.perf_counter()
    jax.block_until_ready(comp(*args))
    ts.append((time.perf_counter() - t) / batch)
  return {
      "ms_per_example": 1e3 * _common.median(ts),
      "flops_per_example": float(ca.get("flops", 0.0)) / batch,
      "bytes_accessed_per_example": float(ca.get("bytes accessed", 0.0)) / batch,
      "compile_s": compile_s,
  }


def coverage_table(bank, n: int) -> dict:
  recs = synthetic_records(64, n)
  b = host_lib.stack_batch(
      [host_lib.prepare_example(r, np.random.default_rng(0), flip=False) for r in recs]
  )
  f = jax.jit(do.synthesize_details)
  rng = np.random.default_rng(1)
  out = {}
  for ci, c in enumerate(mk.CATEGORIES):
    host = [
        mk.coverage(
            mk.synthesize_occlusion(rng, r["landmarks"], r["face_region"], category=c).mask,
            r["face_region"],
        )
        for r in recs
    ]
    o = f(
        bank, b["image"], b["landmarks"], jax.random.key(ci), b["face_region"], jnp.full((n,), ci)
    )
    dev = np.asarray(o.coverage)
    out[c] = {
        "host_mean": float(np.mean(host)),
        "device_mean": float(dev.mean()),
        "host_std": float(np.std(host)),
        "device_std": float(dev.std()),
        "n": n,
    }
  return out


def contact_sheet(bank, path: str, px: int = 128, n: int = 8) -> None:
  """Rows: clean | today's host occluders | device occluders (synthetic, then photos)."""
  rows = []
  for recs in (synthetic_records(px, n), photo_records(px)):
    if not recs:
      continue
    recs = (recs * n)[:n]
    _, outs = host_today(recs, n)
    b = host_lib.stack_batch([host_lib.prepare_example(r, None, flip=False) for r in recs])
    o = jax.jit(do.synthesize_details)(
        bank, b["image"], b["landmarks"], jax.random.key(5), b.get("face_region")
    )
    rows += [
        np.concatenate([r["image"] for r in recs], 1),
        np.concatenate([x[0] for x in outs], 1),
        np.concatenate(list(np.asarray(o.masked)), 1),
    ]
  sheet = np.concatenate(rows, 0)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(sheet).save(path)


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser()
  ap.add_argument("--examples", type=int, default=48)
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--sizes", default="64,128,256")
  ap.add_argument("--coverage-examples", type=int, default=200)
  ap.add_argument("--grid", type=int, default=192)
  ap.add_argument(
      "--sheet", default=os.path.join(os.path.dirname(HERE), "docs", "device_occluders_contact.png")
  )
  ap.add_argument("--out-name", default="device_occluders")
  args = ap.parse_args(argv)
  t = time.perf_counter()
  hb = bank_lib.build_bank(mk.MaskConfig(), bank_lib.BankSizes(grid=args.grid), seed=0)
  bank_s = time.perf_counter() - t
  bank = do.to_device(hb)
  bank_bytes = int(sum(x.nbytes for x in (hb.rgb, hb.opacity, hb.sdf)))
  rows = []
  for px in [int(s) for s in args.sizes.split(",")]:
    for source, recs in (("synthetic", synthetic_records(px, 16)), ("photos", photo_records(px))):
      if not recs:
        continue
      today, _ = host_today(recs, args.examples)
      new = host_new(recs, args.examples)
      dev = device_part(bank, recs, args.batch)
      rows.append(
          {
              "source": source,
              "px": px,
              "host_today_ms": 1e3 * _common.median(today),
              "host_new_ms": 1e3 * _common.median(new),
              **{f"device_{k}": v for k, v in dev.items()},
          }
      )
      print(rows[-1], flush=True)
  big = [r for r in rows if r["px"] == max(x["px"] for x in rows)]
  flops_max = max(r["device_flops_per_example"] for r in big)
  px_max = big[0]["px"]
  # the distillation step runs at 224 px: scale the largest size's FLOPs by area
  flops_224 = flops_max * (224 / px_max) ** 2
  flops_256 = flops_max * (256 / px_max) ** 2
  cov = coverage_table(bank, args.coverage_examples)
  if args.sheet:
    contact_sheet(bank, args.sheet)
  payload = {
      "machine": _common.machine(),
      "bank": {"entries": hb.size, "grid": args.grid, "bytes": bank_bytes, "build_s": bank_s},
      "rows": rows,
      "budgets": {
          "deocc_flops_per_example_256": DEOCC_GFLOP_256 * 1e9,
          "distill_flops_per_example_224": DISTILL_GFLOP_224 * 1e9,
          "device_flops_per_example_256": flops_256,
          "device_flops_per_example_224": flops_224,
          "fraction_of_deocc": flops_256 / (DEOCC_GFLOP_256 * 1e9),
          "fraction_of_distill": flops_224 / (DISTILL_GFLOP_224 * 1e9),
      },
      "coverage_64px": cov,
  }
  md = [
      "# Occluders on the device vs today's host synthesis",
      "",
      f"One run, one core ({payload['machine']['cpu']}, load {payload['machine']['loadavg_at_start']}).",
      f"Bank: {hb.size} entries on a {args.grid}^2 canonical grid, {bank_bytes / 2**20:.1f} MiB, "
      f"built in {bank_s:.1f} s. Medians of {args.examples} examples (host) / 3 batches of "
      f"{args.batch} (device, jitted on this CPU).",
      "",
      "| source | px | today host ms/ex | new host ms/ex | ratio | device (CPU) ms/ex | device MFLOP/ex |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    md.append(
        f"| {r['source']} | {r['px']} | {r['host_today_ms']:.2f} | {r['host_new_ms']:.3f} | "
        f"{r['host_today_ms'] / max(r['host_new_ms'], 1e-9):.0f}x | {r['device_ms_per_example']:.1f} | "
        f"{r['device_flops_per_example'] / 1e6:.0f} |"
    )
  bd = payload["budgets"]
  md += [
      "",
      f"Device FLOPs per example: {flops_256 / 1e9:.3f} GFLOP at 256 px = "
      f"{100 * bd['fraction_of_deocc']:.2f}% of the de-occlusion step's {DEOCC_GFLOP_256:.0f} GFLOP "
      f"(budget 10%); {flops_224 / 1e9:.3f} GFLOP at 224 px = {100 * bd['fraction_of_distill']:.2f}% "
      f"of the distillation step's {DISTILL_GFLOP_224:.0f} GFLOP (budget 5%).",
      "",
      f"Mean coverage per category at 64 px, same {args.coverage_examples} synthetic faces:",
      "",
      "| category | host | device | difference |",
      "|---|---|---|---|",
  ]
  for c, v in cov.items():
    md.append(
        f"| {c} | {v['host_mean']:.3f} | {v['device_mean']:.3f} | {v['device_mean'] - v['host_mean']:+.3f} |"
    )
  _common.write(args.out_name, payload, "\n".join(md))
  return payload


if __name__ == "__main__":
  main()
