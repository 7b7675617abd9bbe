"""Inference speed: the face warp (old numpy pyramid vs PIL) and faces/s of embedding.

    python benchmarks/inference_speed.py [--workdir=RUN] [--reps=20]

Writes benchmarks/results/inference_speed.{md,json}:

* warp: median time to align one face (112 x 112 crop) from a 1024 px and a
  256 px photo with ``alignment.warp_affine`` (numpy bilinear + binomial
  pyramid, the old inference path) and ``alignment.warp_affine_pil`` (PIL
  ``reduce`` + AFFINE bilinear, the new one);
* embed: faces/s of an ArcFace IResNet-50 teacher (random weights, 112 px,
  ``Teacher.embed``, batches of 32, compilation excluded) -- the cost of the
  converted insightface teacher;
* with ``--workdir`` (a trained run with ``results/calibration.json``):
  faces/s of the whole ``FaceRecognizer.verify_pairs`` pipeline (read PNG,
  align, segment, complete with G, embed) of that run, compilation excluded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common  # noqa: E402

from deocc_jax.data import alignment  # noqa: E402
from deocc_jax.utils import face_geometry  # noqa: E402


def _photo(size: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  base = 127.5 + 80 * np.sin(xx / (size / 17)) * np.cos(yy / (size / 11))
  img = base[..., None] + rng.normal(0, 20, (size, size, 3))
  return np.clip(img, 0, 255).astype(np.uint8)


def _face_map(size: int) -> np.ndarray:
  """A crop -> photo similarity: a face ~40% of the photo wide, tilted 10 degrees."""
  tpl = alignment.get_template("arcface").points
  theta, s = np.deg2rad(10.0), 0.4 * size / 112.0
  rot = s * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  lm = (tpl - 56.0) @ rot.T + size / 2.0
  return face_geometry.estimate_similarity(tpl, lm)


def _median_ms(fn, reps: int) -> float:
  fn()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return 1e3 * _common.median(times)


def bench_warp(reps: int) -> list[dict]:
  rows = []
  for size in (1024, 256):
    img, m = _photo(size), _face_map(size)
    old = _median_ms(lambda: alignment.warp_affine(img, m, (112, 112), antialias=True), reps)
    new = _median_ms(lambda: alignment.warp_affine_pil(img, m, (112, 112)), reps)
    diff = np.abs(
        alignment.warp_affine(img, m, (112, 112)) - alignment.warp_affine_pil(img, m, (112, 112))
    )
    rows.append(
        {
            "photo_px": size,
            "scale": float(np.sqrt(abs(np.linalg.det(m[:, :2])))),
            "old_numpy_ms": old,
            "new_pil_ms": new,
            "speedup": old / new,
            "mean_abs_diff": float(diff.mean()),
            "max_abs_diff": float(diff.max()),
        }
    )
  return rows


def bench_iresnet50(batches: int) -> dict:
  import jax
  from deocc_jax.conversion import checkpoint as ckpt
  from deocc_jax.teachers import api

  spec = ckpt.teacher_spec("iresnet50")
  module = spec.build(None, jax.numpy.float32)
  variables = module.init(jax.random.key(0), np.zeros((1, 112, 112, 3), np.float32))

  def apply(params, images):
    x = (images + 1.0) * 127.5
    return {"embedding": module.apply(params, spec.preprocess(x))["embedding"]}

  teacher = api.Teacher("iresnet50", variables, apply, 512, 112, {})
  x = np.random.default_rng(0).integers(0, 256, (32, 112, 112, 3), dtype=np.uint8)
  teacher.embed(x, batch_size=32)  # compile
  t = time.perf_counter()
  for _ in range(batches):
    teacher.embed(x, batch_size=32)
  dt = time.perf_counter() - t
  return {"faces": 32 * batches, "seconds": dt, "faces_per_s": 32 * batches / dt}


def bench_pipeline(workdir: str, pairs: int) -> dict:
  from PIL import Image

  from deocc_jax import inference

  fr = inference.FaceRecognizer.from_run(workdir)
  r = fr.resolution
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as d:
    paths = []
    for i in range(2 * pairs):
      p = os.path.join(d, f"{i}.png")
      Image.fromarray(rng.integers(0, 256, (r, r, 3), dtype=np.uint8)).save(p)
      paths.append(p)
    items = [(paths[2 * i], paths[2 * i + 1]) for i in range(pairs)]
    fr.verify_pairs(items[:2])  # compile
    t = time.perf_counter()
    fr.verify_pairs(items, chunk=64)
    dt = time.perf_counter() - t
  return {
      "workdir": os.path.abspath(workdir),
      "recognizer": fr.name,
      "resolution": r,
      "input_kind": fr.input_kind,
      "faces": 2 * pairs,
      "seconds": dt,
      "faces_per_s": 2 * pairs / dt,
  }


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", default=None)
  ap.add_argument("--reps", type=int, default=20)
  ap.add_argument("--batches", type=int, default=3)
  ap.add_argument("--pairs", type=int, default=128)
  args = ap.parse_args()
  info = _common.machine()
  warp = bench_warp(args.reps)
  emb = bench_iresnet50(args.batches)
  pipe = bench_pipeline(args.workdir, args.pairs) if args.workdir else None
  lines = [
      "# Inference speed (CPU)",
      f"Machine: {info['cpu']}, {info['cores']} cores, load average at start "
      f"{info['loadavg_at_start']}; jax {info.get('jax')}; {info['date']}. "
      "`python benchmarks/inference_speed.py"
      + (f" --workdir={args.workdir}" if pipe else "")
      + "`.",
      "",
      "## Face warp (one 112 x 112 crop, median of " f"{args.reps})",
      "",
      "| photo | shrink | old: numpy + pyramid (ms) | new: PIL reduce + affine (ms) | speed-up "
      "| mean / max abs diff (grey levels) |",
      "|---|---|---|---|---|---|",
  ]
  for w in warp:
    lines.append(
        f"| {w['photo_px']} px | {w['scale']:.2f}x | {w['old_numpy_ms']:.2f} | "
        f"{w['new_pil_ms']:.2f} | {w['speedup']:.0f}x | {w['mean_abs_diff']:.2f} / "
        f"{w['max_abs_diff']:.1f} |"
    )
  lines += [
      "",
      "## Embedding",
      "",
      "| what | faces | seconds | faces/s |",
      "|---|---|---|---|",
      f"| ArcFace IResNet-50 teacher, 112 px, batch 32 (`Teacher.embed`) | {emb['faces']} | "
      f"{emb['seconds']:.1f} | {emb['faces_per_s']:.1f} |",
  ]
  if pipe:
    lines.append(
        f"| `verify_pairs` of `{args.workdir}` ({pipe['recognizer']}, "
        f"{pipe['input_kind']}, {pipe['resolution']} px): read + align + complete + "
        f"embed | {pipe['faces']} | {pipe['seconds']:.1f} | {pipe['faces_per_s']:.1f} |"
    )
  lines += [
      "",
      "Compilation excluded (one warm-up call). Both warps sample the same map "
      "bilinearly in float; they differ only by the anti-aliasing filter when shrinking "
      "more than 2x (binomial pyramid vs box reduction); without it they agree to "
      "float32 precision (tests/test_inference_speedups.py). The machine is shared: "
      "absolute times vary with its load, the ratio less so.",
  ]
  _common.write(
      "inference_speed",
      {"machine": info, "warp": warp, "iresnet50_embed": emb, "pipeline": pipe},
      "\n".join(lines),
  )


if __name__ == "__main__":
  main()
