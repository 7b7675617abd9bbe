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
  align, segment, complete with G, embed) of that run, compilation excluded;
* verify: ``infer verify A B --recognizer=dlib --align=mtcnn|dlib`` on two
  real photos (``tests/helpers/photos.py``): the CLI as a subprocess (first call on a
  fresh persistent compilation cache, then the median of ``--photo-reps``
  warm calls; target < 2 s) and ``FaceRecognizer.verify`` in process;
* folder: faces/s of ``infer embed --folder --recognizer=dlib`` (both
  alignments) vs dlib's own Python pipeline (HOG detector + 5-point shape
  predictor + ``face_recognition_model_v1``, the face-recognition-models
  weights) on the same ~40 files (``--copies`` of each real photo), as
  subprocesses and in process; medians of ``--photo-reps``; target: at least
  dlib's own.

``--sections=verify,folder`` runs a subset (default: all).
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


def _photo_paths() -> dict[str, str]:
  """{name: file} of the real photos: face_recognition 1.3.0's test photos (as the
  tests fetch them) and matplotlib's grace_hopper.jpg (when installed)."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.helpers
  from tests.helpers.photos import PHOTOS, face_photos

  face_photos()  # fetched and cached on first use
  d = os.path.expanduser("~/.cache/deocc_jax/face_recognition-1.3.0-test_images")
  out = {n: os.path.join(d, f"{n}.jpg") for n in PHOTOS}
  try:
    import matplotlib

    hopper = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if os.path.isfile(hopper):
      out["grace_hopper"] = hopper
  except ImportError:
    pass
  return out


def _cli(args: list[str], env: dict[str, str]) -> tuple[float, dict]:
  """Wall seconds and JSON output of one ``python -m deocc_jax.infer`` call."""
  import json
  import subprocess

  t = time.perf_counter()
  proc = subprocess.run(
      [sys.executable, "-m", "deocc_jax.infer", *args],
      capture_output=True,
      text=True,
      env=env,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  dt = time.perf_counter() - t
  if proc.returncode != 0:
    raise RuntimeError(f"infer {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
  return dt, json.loads(proc.stdout)


def bench_verify(photo_a: str, photo_b: str, env: dict[str, str], reps: int) -> list[dict]:
  """``infer verify A B --recognizer=dlib --align=X`` as a user meets it: the
  CLI as a subprocess (first call on a fresh compilation cache, then ``reps``
  warm calls), and in process (models loaded) per pair."""
  from deocc_jax.inference import pretrained

  from PIL import Image

  fr = pretrained.from_teacher("dlib")
  sizes = []
  for p in (photo_a, photo_b):
    with Image.open(p) as im:
      sizes.append(f"{im.width} x {im.height}")
  rows = []
  for align in ("mtcnn", "dlib"):
    args = ["verify", photo_a, photo_b, "--recognizer=dlib", f"--align={align}"]
    first, out = _cli(args, env)
    warm = [_cli(args, env)[0] for _ in range(reps)]
    fr.verify(photo_a, photo_b, align=align)  # compile
    inproc = []
    for _ in range(max(reps, 5)):
      t = time.perf_counter()
      v = fr.verify(photo_a, photo_b, align=align)
      inproc.append(time.perf_counter() - t)
    rows.append(
        {
            "align": align,
            "sizes": sizes,
            "cli_first_s": first,
            "cli_warm_s": warm,
            "cli_warm_median_s": _common.median(warm),
            "in_process_s": inproc,
            "in_process_median_s": _common.median(inproc),
            "score": out["score"],
            "same": out["same"],
            "in_process_score": v.score,
            "target_met": _common.median(warm) < 2.0,
        }
    )
    print("verify", align, rows[-1]["cli_warm_median_s"], flush=True)
  return rows


def bench_floor(reps: int) -> dict:
  """Wall seconds of a bare ``python -c 'import jax'`` (median of ``reps``): the
  part of every CLI call no change to this package can remove."""
  import subprocess

  times = []
  for _ in range(max(reps, 3)):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import jax"], check=True)
    times.append(time.perf_counter() - t)
  return {"import_jax_s": times, "import_jax_median_s": _common.median(times)}


def make_folder(photos: dict[str, str], dest: str, copies: int, max_side: int) -> int:
  """``copies`` of each photo under ``dest/<identity>/``, downscaled to ``max_side``."""
  from PIL import Image

  n = 0
  for name, path in photos.items():
    img = Image.open(path).convert("RGB")
    s = min(1.0, max_side / max(img.size))
    img = img.resize((round(img.width * s), round(img.height * s)), Image.BILINEAR)
    sub = os.path.join(dest, name.rstrip("0123456789"))
    os.makedirs(sub, exist_ok=True)
    for k in range(copies):
      img.save(os.path.join(sub, f"{name}_{k}.jpg"), quality=95)
      n += 1
  return n


DLIB_PIPELINE = """
import os, sys, time
import dlib, face_recognition_models as frm, numpy as np
from PIL import Image

def load():
  return (dlib.get_frontal_face_detector(),
          dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
          dlib.face_recognition_model_v1(frm.face_recognition_model_location()))

def run(folder, models):
  det, sp, rec = models
  out = []
  for root, _, files in sorted(os.walk(folder)):
    for f in sorted(files):
      img = np.array(Image.open(os.path.join(root, f)).convert("RGB"))
      rects = det(img, 1)
      if not len(rects):
        continue
      r = max(rects, key=lambda r: r.area())  # the largest face, as infer embeds
      out.append(np.array(rec.compute_face_descriptor(img, sp(img, r))))
  return np.stack(out)

if __name__ == "__main__":
  print(len(run(sys.argv[1], load())))
"""


def bench_folder(folder: str, n_images: int, env: dict[str, str], reps: int) -> dict:
  """faces/s of ``infer embed --folder`` (--recognizer=dlib, MTCNN and dlib
  alignment) vs dlib's own Python pipeline on the same files: CLI and script
  as subprocesses (wall time, a user's view), and in process (models loaded)."""
  import subprocess

  from deocc_jax.inference import pretrained

  ns: dict = {}
  exec(compile(DLIB_PIPELINE, "dlib_pipeline", "exec"), ns)  # noqa: S102
  out: dict = {"images": n_images, "reps": reps, "rows": []}

  def add(what: str, kind: str, times: list[float], faces: int) -> None:
    med = _common.median(times)
    out["rows"].append(
        {
            "what": what,
            "kind": kind,
            "faces": faces,
            "seconds": times,
            "median_s": med,
            "faces_per_s": faces / med,
        }
    )
    print(what, kind, f"{faces / med:.2f} faces/s", flush=True)

  script = os.path.join(folder + "_dlib_pipeline.py")
  with open(script, "w") as f:
    f.write(DLIB_PIPELINE)
  times, faces = [], 0
  for _ in range(reps):
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, script, folder], capture_output=True, text=True, check=True
    )
    times.append(time.perf_counter() - t)
    faces = int(proc.stdout.split()[-1])
  add("dlib's own pipeline (HOG + 5-point + face_recognition_model_v1)", "subprocess", times, faces)
  models = ns["load"]()
  ns["run"](folder, models)  # warm the file cache
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    faces = len(ns["run"](folder, models))
    times.append(time.perf_counter() - t)
  add("dlib's own pipeline (HOG + 5-point + face_recognition_model_v1)", "in process", times, faces)
  fr = pretrained.from_teacher("dlib")
  npz = folder + "_gallery.npz"
  for align in ("dlib", "mtcnn"):
    args = ["embed", f"--folder={folder}", f"--out={npz}", "--recognizer=dlib", f"--align={align}"]
    _cli(args, env)  # fills the compilation cache for this folder's sizes
    times = []
    for _ in range(reps):
      dt, res = _cli(args, env)
      times.append(dt)
    add(
        f"`infer embed --folder --recognizer=dlib --align={align}`",
        "subprocess",
        times,
        res["count"],
    )
    fr.embed_folder(folder, npz, align=align)  # compile
    times = []
    for _ in range(reps):
      t = time.perf_counter()
      g = fr.embed_folder(folder, npz, align=align)
      times.append(time.perf_counter() - t)
    add(f"`FaceRecognizer.embed_folder` (dlib, align={align})", "in process", times, len(g.paths))
  return out


def photo_lines(
    verify: list[dict] | None, folder: dict | None, photos: dict, floor: dict | None = None
) -> list[str]:
  lines = []
  if verify:
    lines += [
        "",
        "## Warm `verify` of two photos (--recognizer=dlib)",
        "",
        f"`python -m deocc_jax.infer verify {os.path.basename(photos['obama'])} "
        f"{os.path.basename(photos['obama2'])} --recognizer=dlib --align=X`, full-size "
        f"photos ({verify[0]['sizes'][0]} and {verify[0]['sizes'][1]} px). CLI: a subprocess, "
        "as a user runs it; "
        "the first call on a fresh persistent compilation cache, then the median of "
        f"{len(verify[0]['cli_warm_s'])} warm calls. In process: `FaceRecognizer.verify` "
        "(models loaded, compiled), read + detect + align + embed both photos.",
        "",
        "| alignment | CLI first call (s) | CLI warm, median (s) | target < 2 s | "
        "in process per pair, median (s) | score (same) |",
        "|---|---|---|---|---|---|",
    ]
    for r in verify:
      lines.append(
          f"| {r['align']} | {r['cli_first_s']:.2f} | {r['cli_warm_median_s']:.2f} | "
          f"{'met' if r['target_met'] else 'NOT met'} | {r['in_process_median_s']:.3f} | "
          f"{r['score']:.3f} ({str(r['same']).lower()}) |"
      )
    if floor:
      lines += [
          "",
          f"The floor of any CLI call here: the interpreter and `import jax` alone take "
          f"{floor['import_jax_median_s']:.2f} s (median of {len(floor['import_jax_s'])}), "
          "before an image is read; detection of two full-size photos and the embedding "
          "come on top. A resident process (in process above, or `deocc-serve "
          "--detector=...` over an export) pays only the per-pair column.",
      ]
  if folder:
    dlib_own = {r["kind"]: r["faces_per_s"] for r in folder["rows"] if r["what"].startswith("dlib")}
    lines += [
        "",
        f"## Folder throughput: {folder['images']} images ({folder['copies']} copies of each "
        f"of {len(photos)} real photos, max side {folder['max_side']} px), median of "
        f"{folder['reps']}",
        "",
        "Subprocess: wall time of the whole command (interpreter, imports, model loading, "
        "warm compilation cache). In process: models loaded and compiled.",
        "",
        "| pipeline | how | faces | median (s) | faces/s | vs dlib's own (same how) |",
        "|---|---|---|---|---|---|",
    ]
    for r in folder["rows"]:
      ratio = r["faces_per_s"] / dlib_own[r["kind"]]
      lines.append(
          f"| {r['what']} | {r['kind']} | {r['faces']} | {r['median_s']:.2f} | "
          f"{r['faces_per_s']:.2f} | {ratio:.2f}x |"
      )
  return lines


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", default=None)
  ap.add_argument("--reps", type=int, default=20)
  ap.add_argument("--batches", type=int, default=3)
  ap.add_argument("--pairs", type=int, default=128)
  ap.add_argument(
      "--sections", default="warp,embed,verify,folder", help="comma-separated subset to run"
  )
  ap.add_argument("--photo-reps", type=int, default=3, help="warm runs per photo measurement")
  ap.add_argument("--copies", type=int, default=8, help="copies of each photo in the folder")
  ap.add_argument("--max-side", type=int, default=640, help="folder photos' max side (px)")
  args = ap.parse_args()
  sections = set(args.sections.split(","))
  info = _common.machine()
  warp = bench_warp(args.reps) if "warp" in sections else []
  emb = bench_iresnet50(args.batches) if "embed" in sections else None
  pipe = bench_pipeline(args.workdir, args.pairs) if args.workdir else None
  verify = folder = floor = None
  photos = _photo_paths() if sections & {"verify", "folder"} else {}
  with tempfile.TemporaryDirectory() as tmp:
    env = dict(os.environ, DEOCC_JAX_CACHE_DIR=os.path.join(tmp, "jax_cache"))
    if "verify" in sections:
      verify = bench_verify(photos["obama"], photos["obama2"], env, args.photo_reps)
      floor = bench_floor(args.photo_reps)
    if "folder" in sections:
      d = os.path.join(tmp, "photos")
      n = make_folder(photos, d, args.copies, args.max_side)
      folder = bench_folder(d, n, env, args.photo_reps)
      folder.update(copies=args.copies, max_side=args.max_side, photos=sorted(photos))
  lines = [
      "# Inference speed (CPU)",
      f"Machine: {info['cpu']}, {info['cores']} cores, load average at start "
      f"{info['loadavg_at_start']}; jax {info.get('jax')}; {info['date']}. "
      "`python benchmarks/inference_speed.py"
      + (f" --workdir={args.workdir}" if pipe else "")
      + (
          f" --sections={args.sections}"
          if sections != {"warp", "embed", "verify", "folder"}
          else ""
      )
      + "`.",
  ]
  if warp:
    lines += [
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
  if emb or pipe:
    lines += ["", "## Embedding", "", "| what | faces | seconds | faces/s |", "|---|---|---|---|"]
  if emb:
    lines.append(
        f"| ArcFace IResNet-50 teacher, 112 px, batch 32 (`Teacher.embed`) | {emb['faces']} | "
        f"{emb['seconds']:.1f} | {emb['faces_per_s']:.1f} |"
    )
  if pipe:
    lines.append(
        f"| `verify_pairs` of `{args.workdir}` ({pipe['recognizer']}, "
        f"{pipe['input_kind']}, {pipe['resolution']} px): read + align + complete + "
        f"embed | {pipe['faces']} | {pipe['seconds']:.1f} | {pipe['faces_per_s']:.1f} |"
    )
  lines += photo_lines(verify, folder, photos, floor)
  lines += [
      "",
      "Compilation excluded where not said otherwise (one warm-up call). Both warps "
      "sample the same map bilinearly in float; they differ only by the anti-aliasing "
      "filter when shrinking more than 2x (binomial pyramid vs box reduction); without it "
      "they agree to float32 precision (tests/inference/test_speedups.py). The machine is "
      "shared: absolute times vary with its load, the ratios less so.",
  ]
  _common.write(
      "inference_speed",
      {
          "machine": info,
          "warp": warp,
          "iresnet50_embed": emb,
          "pipeline": pipe,
          "verify": verify,
          "import_floor": floor,
          "folder": folder,
      },
      "\n".join(lines),
  )


if __name__ == "__main__":
  main()
