"""Masked real photos: contact sheets, HOG vs MTCNN detection rate, and
verification (AUC / accuracy / TAR at FAR) of the real recognisers ``infer`` runs.

Usage::

    python benchmarks/masked_real_photos.py [--seeds 4] [--max-side 480] [--sheets-only]
        [--teacher converted:DIR[:THRESHOLD] ...] [--folder DIR] [--out NAME]

Photos: the four test photos of face_recognition 1.3.0's sdist (fetched by
pip on first use, as the tests do: ``tests/helpers/photos.py``) and the real face
photos installed packages ship (matplotlib's ``sample_data/grace_hopper.jpg``),
downscaled to ``--max-side``; or ``--folder DIR`` (one subfolder per
identity: your own photos). Ground truth: dlib's 68-point landmarks on the
clean photo (photos where dlib finds none are skipped). Each photo is masked
under every category (simple / complex / body / hybrid, procedural shapes,
``face_mask_prob`` 0) and every landmark-fitted face mask kind (surgical /
n95 / kn95 / cloth), ``--seeds`` draws each.

* Detection rate: dlib's HOG frontal detector (upsample 1) and MTCNN
  (Flax, facenet-pytorch weights, as ``infer --align=mtcnn`` runs it). A face
  counts as detected when a box's centre is within 0.5 inter-ocular distances
  (iod) of the landmarks' centre and its width is 1-5 iod.
* Distances: dlib's face ResNet (``teachers/dlib_resnet.py``) on 150x150
  chips aligned with the *clean* photo's 5-point landmarks (recognition only),
  decided at dlib's 0.6 Euclidean threshold.
* Verification table: each recogniser (dlib's, as ``infer --recognizer=dlib``
  builds it; each ``--teacher``, as ``--teacher_kind/--teacher_path``) x each
  way of finding the face (MTCNN / dlib HOG on the whole, masked image, as
  ``infer --align=...``: ``inference.locate``, largest face; or the clean
  photo's landmarks, no detection) x clean vs clean / clean vs one masked face
  (each masked photo vs every other clean photo). AUC, accuracy at the
  recogniser's threshold (dlib: 0.905 cosine = its 0.6 distance; a converted
  one: the THRESHOLD given, else none), TAR at FAR 1e-3 and at the lowest FAR
  the impostor pairs allow (``_photo_metrics.py``). A pair with an undetected
  face scores -1 (the lowest cosine: rejected) and is counted.

Writes ``docs/masked_faces_real.png`` (the four test photos),
``docs/masked_faces_synthetic.png`` (not with ``--folder``) and
``benchmarks/results/NAME.{json,md}`` (default ``masked_real_photos``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, ROOT)  # the repository root: tests.helpers

import _photo_metrics as pm  # noqa: E402
from _common import RESULTS, machine  # noqa: E402
from deocc_jax.data import alignment  # noqa: E402
from deocc_jax.data import dense_landmarks as dl  # noqa: E402
from deocc_jax.data import face_mask_geometry as fmg  # noqa: E402
from deocc_jax.data import masks as mk  # noqa: E402

CONDITIONS = mk.CATEGORIES + tuple(f"facemask:{k}" for k in fmg.FACE_MASK_KINDS)
DOCS = os.path.join(ROOT, "docs")
# Real face photos that installed packages ship: (name, identity, (module, *path)).
SHIPPED_PHOTOS = (
    ("grace_hopper", "hopper", ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")),
)
# How the verification table finds faces: detected on the (masked) image as
# `infer --align=...` does, or the clean photo's dlib landmarks (no detection).
ALIGNS = ("mtcnn", "dlib", "landmarks")
ALIGN_TEXT = {
    "mtcnn": "MTCNN",
    "dlib": "dlib HOG",
    "landmarks": "none: clean photo's landmarks",
}
UNDETECTED_SCORE = -1.0  # a pair with an undetected face: the lowest cosine (rejected)
SETS = ("clean", "masked", "facemask")
SET_TEXT = {
    "clean": "clean vs clean",
    "masked": "clean vs one masked (all categories)",
    "facemask": "clean vs one masked (face masks only)",
}


def occlude(img, dense, five, region, condition, seed):
  rng = np.random.default_rng([seed, CONDITIONS.index(condition), 0xBE])
  if condition.startswith("facemask:"):
    occ = mk.face_mask_occlusion(
        rng, five, region, kind=condition.split(":")[1], dense_landmarks=dense
    )
  else:
    cfg = mk.MaskConfig(face_mask_prob=0.0 if condition != "hybrid" else 0.2)
    occ = mk.synthesize_occlusion(rng, five, region, cfg, condition, dense_landmarks=dense)
  return mk.composite(img, occ), occ


def default_photos() -> dict[str, tuple[str, np.ndarray]]:
  """{name: (identity, RGB)}: face_recognition 1.3.0's 4 test photos (as the
  tests fetch them) and the real face photos installed packages ship."""
  from tests.helpers.photos import face_photos

  out = {n: (n.rstrip("0123456789"), img) for n, img in face_photos().items()}
  for name, identity, path in SHIPPED_PHOTOS:
    try:
      mod = importlib.import_module(path[0])
    except ImportError:
      continue
    f = os.path.join(os.path.dirname(mod.__file__), *path[1:])
    if os.path.isfile(f):
      out[name] = (identity, np.array(Image.open(f).convert("RGB")))
  return out


def folder_photos(folder: str) -> dict[str, tuple[str, np.ndarray]]:
  """{relative path: (identity = first-level subfolder, RGB)} of a user's folder."""
  from deocc_jax import inference
  from deocc_jax.inference.images import label_of, read_face_image

  rel = inference.list_images(folder)
  out = {p: (label_of(p), read_face_image(os.path.join(folder, p), p)) for p in rel}
  if len({i for i, _ in out.values()}) < 2:
    raise ValueError(f"{folder}: needs images in at least 2 identity subfolders, got {len(out)}")
  return out


def nearest(faces: np.ndarray, centre: np.ndarray) -> np.ndarray:
  return faces[int(np.argmin([np.hypot(*(f.mean(0) - centre)) for f in faces]))]


def load_photos(raw, max_side):
  """Downscales each photo to ``max_side`` and finds its ground truth: dlib's
  68 landmarks (largest face) and the matching 5-point landmarks."""
  out = {}
  for name, (identity, img) in raw.items():
    s = min(1.0, max_side / max(img.shape[:2]))
    small = np.asarray(
        Image.fromarray(img).resize(
            (round(img.shape[1] * s), round(img.shape[0] * s)), Image.BILINEAR
        )
    )
    try:
      dense_all = alignment.detect_landmarks68_dlib(small)
    except ValueError:
      print(f"skipped {name}: dlib finds no face on the clean photo (no ground truth)")
      continue
    dense = dense_all[int(np.argmax([np.ptp(d, 0).prod() for d in dense_all]))]
    five = dl.canonical5_from_68(dense)
    c = five.mean(0)
    d5 = nearest(alignment.detect_landmarks_dlib(small, order="dlib5"), c)
    canon = nearest(alignment.detect_landmarks_dlib(small), c)
    region = mk.face_region_from_landmarks(five, *small.shape[:2])
    out[name] = dict(
        identity=identity, img=small, dense=dense, five=five, dlib5=d5, canon=canon, region=region
    )
  return out


def face_crop(img, five, size):
  c = five.mean(0)
  iod = np.hypot(*(five[1] - five[0]))
  half = 1.6 * iod
  m = np.array([[2 * half / size, 0, c[0] - half], [0, 2 * half / size, c[1] - half]])
  return np.clip(alignment.warp_affine(img, m, (size, size)), 0, 255).astype(np.uint8)


def contact_sheets(photos, tile=96):
  from deocc_jax.data.render import contact_sheet

  cols = ("clean",) + CONDITIONS
  tiles = []
  for k, (name, p) in enumerate(photos.items()):
    tiles.append(face_crop(p["img"], p["five"], tile))
    for cond in CONDITIONS:
      out, _ = occlude(p["img"], p["dense"], p["five"], p["region"], cond, 3 + k)
      tiles.append(face_crop(out, p["five"], tile))
  os.makedirs(DOCS, exist_ok=True)
  real_path = os.path.join(DOCS, "masked_faces_real.png")
  Image.fromarray(contact_sheet(tiles, len(cols))).save(real_path, optimize=True)
  from deocc_jax.data.synthetic_faces import SyntheticFaces

  ds = SyntheticFaces(identities=60, images_per_identity=2, resolution=64, seed=0)
  tiles = []
  for i in range(0, 60, 12):
    r = ds.render(i, 0)
    tiles.append(np.kron(r["image"], np.ones((2, 2, 1), np.uint8)))
    for cond in CONDITIONS:
      out, _ = occlude(r["image"], None, r["landmarks"], r["face_region"], cond, i)
      tiles.append(np.kron(out, np.ones((2, 2, 1), np.uint8)))
  syn_path = os.path.join(DOCS, "masked_faces_synthetic.png")
  Image.fromarray(contact_sheet(tiles, len(cols))).save(syn_path, optimize=True)
  return {
      "columns": list(cols),
      "real": os.path.relpath(real_path, ROOT),
      "synthetic": os.path.relpath(syn_path, ROOT),
  }


def detected(boxes, five):
  c = five.mean(0)
  iod = np.hypot(*(five[1] - five[0]))
  for x1, y1, x2, y2 in boxes:
    bc = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    if np.hypot(*(bc - c)) <= 0.5 * iod and iod <= (x2 - x1) <= 5 * iod:
      return True
  return False


def parse_teacher(spec: str) -> tuple[str, str, float | None]:
  """``KIND:PATH[:THRESHOLD]`` (KIND dlib or converted) -> (kind, path, threshold)."""
  kind, _, rest = spec.partition(":")
  if kind not in ("dlib", "converted") or not rest:
    raise SystemExit(f"--teacher {spec!r}: expected KIND:PATH[:THRESHOLD], KIND dlib or converted")
  path, thr = rest, None
  head, _, tail = rest.rpartition(":")
  if head:
    try:
      path, thr = head, float(tail)
    except ValueError:
      pass
  return kind, path, thr


def recognizers(teachers):
  """[(label, FaceRecognizer, threshold given)]: dlib's (always) and each --teacher,
  built as ``infer --recognizer=dlib`` / ``--teacher_kind --teacher_path`` build them."""
  from deocc_jax.inference import pretrained

  out = [("dlib", pretrained.from_teacher("dlib"), True)]
  for spec in teachers:
    kind, path, thr = parse_teacher(spec)
    given = thr is not None or kind == "dlib"
    fr = pretrained.from_teacher(kind, path, 0.0 if not given else thr)
    out.append((f"{fr.name} ({path})", fr, given))
  return out


def locate_variants(photos, variants, align, resolution):
  """{'NAME#I': Located | exception} of every clean photo (I = 0) and masked
  variant, found as ``infer`` finds faces (``inference.locate``)."""
  from deocc_jax import inference

  out = {}
  for n, p in photos.items():
    for i, (_, img) in enumerate(variants[n]):
      key = f"{n}#{i}"
      lm = p["canon"] if align == "landmarks" else None
      try:
        out[key] = inference.locate(img, key, resolution, align, lm)
      except ValueError as e:  # NoFaceError, a face too small
        out[key] = e
  return out


def embed_located(fr, located):
  """{key: embedding} of the located faces, through ``FaceRecognizer.load`` (the
  CLI's path: ``fr.located`` holds what preflight found), prepare, embed."""
  keys = [k for k, v in located.items() if not isinstance(v, Exception)]
  fr.located = located
  try:
    faces = [fr.load(k) for k in keys]
  finally:
    fr.located = None
  emb = fr.embed_prepared(fr.prepare(faces).completed) if faces else []
  return dict(zip(keys, emb))


def pair_sets(photos, variants):
  """{set: [(key_a, key_b, same)]}: clean vs clean (each unordered pair) and each
  masked variant vs every *other* clean photo (the probe is the masked one)."""
  names = list(photos)
  ident = {n: p["identity"] for n, p in photos.items()}
  out = {s: [] for s in SETS}
  for a in range(len(names)):
    for b in range(a + 1, len(names)):
      n, m = names[a], names[b]
      out["clean"].append((f"{n}#0", f"{m}#0", ident[n] == ident[m]))
  for n in names:
    for i, (cond, _) in enumerate(variants[n]):
      if i == 0:
        continue
      for m in names:
        if m != n:
          pair = (f"{n}#{i}", f"{m}#0", ident[n] == ident[m])
          out["masked"].append(pair)
          if cond.startswith("facemask:"):
            out["facemask"].append(pair)
  return out


def verification_rows(photos, variants, teachers, cache=None):
  """The verification table: per recogniser x alignment x pair set, AUC /
  accuracy / TAR at FAR (``_photo_metrics.summarize``) and undetected probes."""
  sets = pair_sets(photos, variants)
  probes = {s: sorted({a for a, _, _ in sets[s]} | {b for _, b, _ in sets[s]}) for s in SETS}
  rows, cache, seconds = [], dict(cache or {}), {}
  for label, fr, given in recognizers(teachers):
    for align in ALIGNS:
      if (align, fr.resolution) not in cache:
        t = time.time()
        cache[(align, fr.resolution)] = locate_variants(photos, variants, align, fr.resolution)
        seconds[f"locate_{align}"] = time.time() - t
      located = cache[(align, fr.resolution)]
      t = time.time()
      emb = embed_located(fr, located)
      seconds[f"embed_{label}_{align}"] = time.time() - t
      for s in SETS:
        scores = [
            float(fr.cosine(emb[a], emb[b])) if a in emb and b in emb else UNDETECTED_SCORE
            for a, b, _ in sets[s]
        ]
        same = [y for _, _, y in sets[s]]
        missing = [k for k in probes[s] if k not in emb]
        rows.append(
            {
                "recognizer": label,
                "align": align,
                "set": s,
                "threshold": fr.threshold if given else None,
                "images": len(probes[s]),
                "undetected": len(missing),
                "undetected_images": missing[:50],
                **pm.summarize(scores, same, fr.threshold if given else None),
            }
        )
  return rows, seconds, {s: len(v) for s, v in sets.items()}


def verification_markdown(rows, photos, seeds) -> list[str]:
  ids = sorted({p["identity"] for p in photos.values()})
  far = rows[0]["far"]
  lines = [
      "",
      f"## Verification on real photos ({len(photos)} photos of {len(ids)} people: "
      f"{', '.join(ids)}; {seeds} draws of each of the {len(CONDITIONS)} occluder "
      f"conditions per photo)",
      "",
      "Each face found as `infer` finds it (`inference.locate` on the whole, masked, "
      "image; the largest face) and embedded through `FaceRecognizer` "
      "(`--recognizer=dlib`: dlib's chip, threshold = dlib's 0.6 distance). A pair with "
      f"an undetected face scores {UNDETECTED_SCORE:g} (the lowest cosine: rejected, "
      "a false reject for a same-person pair). Masked pairs: each masked photo vs every "
      "other clean photo.",
      "",
      f"| recogniser | faces found by | pairs | genuine / impostor | images undetected | "
      f"AUC | accuracy @ threshold | TAR @ FAR {far:g} | TAR @ lowest FAR (FAR) |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    acc = "—" if r["accuracy"] is None else f"{r['accuracy']:.3f} (@{r['threshold']:.3f})"
    tar = f"{r['tar_at_far']:.3f}" + ("" if r["far_meaningful"] else "*")
    lines.append(
        f"| {r['recognizer']} | {ALIGN_TEXT[r['align']]} | {SET_TEXT[r['set']]} | "
        f"{r['genuine']} / {r['impostor']} | {r['undetected']} / {r['images']} | "
        f"{r['auc']:.3f} | {acc} | {tar} | {r['tar_at_lowest_far']:.3f} "
        f"({r['lowest_far']:.2g}) |"
    )
  lines += [
      "",
      f"\\* fewer than {round(1 / far)} impostor pairs: FAR {far:g} cannot be measured; "
      "the value is TAR at FAR 0 (threshold above every impostor score). The last column "
      "allows one false accept (FAR = 1 / impostor pairs). With so few people the "
      "impostor pairs are strongly correlated: read AUC and TAR as indicative only.",
  ]
  return lines


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--seeds", type=int, default=4)
  ap.add_argument("--max-side", type=int, default=480)
  ap.add_argument("--sheets-only", action="store_true")
  ap.add_argument(
      "--folder", default=None, help="your own photos instead: one subfolder per identity"
  )
  ap.add_argument(
      "--teacher",
      action="append",
      default=[],
      help="another recogniser, KIND:PATH[:THRESHOLD] (converted:DIR from "
      "`python -m deocc_jax.convert`; repeatable)",
  )
  ap.add_argument("--out", default="masked_real_photos", help="results file name")
  args = ap.parse_args(argv)
  t0 = time.time()
  raw = folder_photos(args.folder) if args.folder else default_photos()
  photos = load_photos(raw, args.max_side)
  sheets = None
  if not args.folder:
    from tests.helpers.photos import PHOTOS

    sheets = contact_sheets({n: p for n, p in photos.items() if n in PHOTOS})
    print("contact sheets:", sheets, flush=True)
  if args.sheets_only:
    return
  import dlib
  from deocc_jax.teachers import dlib_resnet as dr

  hog = dlib.get_frontal_face_detector()
  module, variables, meta = dr.load_dlib_resnet()
  thr = float(meta["dist_thresh"])
  chip_size = int(alignment.get_template("dlib").size[0])

  def chip(img, p):
    return alignment.align_face(img, p["dlib5"], template="dlib", landmark_order="dlib5")

  variants = {
      n: [("clean", p["img"])]
      + [
          (c, occlude(p["img"], p["dense"], p["five"], p["region"], c, s)[0])
          for c in CONDITIONS
          for s in range(args.seeds)
      ]
      for n, p in photos.items()
  }
  t = time.time()
  by_mtcnn = locate_variants(photos, variants, "mtcnn", chip_size)  # as infer --align=mtcnn
  t_det = {"hog": 0.0, "mtcnn": time.time() - t}
  print("MTCNN located", f"{time.time() - t0:.0f}s", flush=True)

  def mtcnn_boxes(key, img):
    entry = by_mtcnn[key]
    if not isinstance(entry, Exception):
      return [f.box for f in entry.faces]
    from deocc_jax import inference

    return [f.box for f in inference.detect_faces(img, "mtcnn")]  # found, then refused

  clean_emb = {n: dr.embed(module, variables, chip(p["img"], p)) for n, p in photos.items()}
  names = list(photos)
  ident = {n: p["identity"] for n, p in photos.items()}
  rows = {"clean": {"hog": [], "mtcnn": [], "pairs": []}}
  rows.update({c: {"hog": [], "mtcnn": [], "pairs": []} for c in CONDITIONS})
  for n, p in photos.items():
    for i, (cond, img) in enumerate(variants[n]):
      t = time.time()
      hb = [(d.left(), d.top(), d.right(), d.bottom()) for d in hog(img, 1)]
      t_det["hog"] += time.time() - t
      rows[cond]["hog"].append(detected(hb, p["five"]))
      rows[cond]["mtcnn"].append(detected(mtcnn_boxes(f"{n}#{i}", img), p["five"]))
      e = dr.embed(module, variables, chip(img, p))
      for m in names:
        if m != n:
          dist = float(np.linalg.norm(e - clean_emb[m]))
          rows[cond]["pairs"].append((ident[n] == ident[m], dist))
    print(n, "done", f"{time.time() - t0:.0f}s", flush=True)
  table = {}
  for cond, r in rows.items():
    same = np.array([d for s, d in r["pairs"] if s])
    diff = np.array([d for s, d in r["pairs"] if not s])
    correct = [(d < thr) == s for s, d in r["pairs"]]
    table[cond] = {
        "images": len(r["hog"]),
        "hog_rate": float(np.mean(r["hog"])),
        "mtcnn_rate": float(np.mean(r["mtcnn"])),
        "same_dist_mean": float(same.mean()) if len(same) else float("nan"),
        "diff_dist_mean": float(diff.mean()) if len(diff) else float("nan"),
        "pairs": len(r["pairs"]),
        "accuracy_at_0.6": float(np.mean(correct)),
        "same_rejected": float(np.mean(same >= thr)) if len(same) else float("nan"),
    }
  masked = [c for c in CONDITIONS]
  summary = {
      "hog_rate_masked": float(np.mean([x for c in masked for x in rows[c]["hog"]])),
      "mtcnn_rate_masked": float(np.mean([x for c in masked for x in rows[c]["mtcnn"]])),
      "hog_rate_facemasks": float(
          np.mean([x for c in masked if c.startswith("facemask") for x in rows[c]["hog"]])
      ),
      "mtcnn_rate_facemasks": float(
          np.mean([x for c in masked if c.startswith("facemask") for x in rows[c]["mtcnn"]])
      ),
      "seconds_per_image": {
          k: v / sum(len(r["hog"]) for r in rows.values()) for k, v in t_det.items()
      },
  }
  verification, v_seconds, pair_counts = verification_rows(
      photos, variants, args.teacher, {("mtcnn", chip_size): by_mtcnn}
  )
  result = {
      "machine": machine(),
      "args": vars(args),
      "photos": {
          n: {"identity": p["identity"], "size": list(p["img"].shape[:2])}
          for n, p in photos.items()
      },
      "threshold": thr,
      "sheets": sheets,
      "conditions": table,
      "summary": summary,
      "verification": verification,
      "verification_pairs": pair_counts,
      "verification_seconds": v_seconds,
      "seconds": time.time() - t0,
  }
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, f"{args.out}.json"), "w") as f:
    json.dump(result, f, indent=2)
  what = (
      f"{len(photos)} photos under {args.folder}"
      if args.folder
      else f"face_recognition 1.3.0's 4 photos + {len(photos) - 4} shipped by packages"
  )
  lines = [
      f"# Masked real photos ({what}, max side {args.max_side} px, "
      f"{args.seeds} draws per condition)",
      "",
      "`python benchmarks/masked_real_photos.py"
      + "".join(f" --teacher={t}" for t in args.teacher)
      + (f" --folder={args.folder}" if args.folder else "")
      + "`",
      "",
      "## Detection, and dlib's verification on chips aligned by the clean photo's landmarks",
      "",
      "| condition | images | HOG detected | MTCNN detected | same-person dist | "
      "different-person dist | verification acc @0.6 | same-person rejected |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for cond, t in table.items():
    lines.append(
        f"| {cond} | {t['images']} | {t['hog_rate']:.2f} | {t['mtcnn_rate']:.2f} | "
        f"{t['same_dist_mean']:.3f} | {t['diff_dist_mean']:.3f} | "
        f"{t['accuracy_at_0.6']:.2f} | {t['same_rejected']:.2f} |"
    )
  lines += [
      "",
      f"All masked: HOG {summary['hog_rate_masked']:.2f}, MTCNN "
      f"{summary['mtcnn_rate_masked']:.2f}; face masks only: HOG "
      f"{summary['hog_rate_facemasks']:.2f}, MTCNN {summary['mtcnn_rate_facemasks']:.2f}. "
      f"Seconds per image: HOG {summary['seconds_per_image']['hog']:.2f}, MTCNN "
      f"{summary['seconds_per_image']['mtcnn']:.2f} (MTCNN as `infer` locates: "
      "detection + checks, incl. jit compiles).",
  ]
  lines += verification_markdown(verification, photos, args.seeds)
  lines += [
      "",
      f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
      f"{result['seconds']:.0f} s in all.",
  ]
  with open(os.path.join(RESULTS, f"{args.out}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
