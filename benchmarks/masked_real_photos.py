"""Masked real photos: contact sheets, HOG vs MTCNN detection rate, dlib verification drop.

Usage::

    python benchmarks/masked_real_photos.py [--seeds 4] [--max-side 480] [--sheets-only]

Photos: the four test photos of face_recognition 1.3.0's sdist (fetched by
pip on first use, as the tests do: ``tests/_photos.py``), downscaled to
``--max-side``. Ground truth: dlib's 68-point landmarks on the clean photo.
Each photo is masked under every category (simple / complex / body / hybrid,
procedural shapes, ``face_mask_prob`` 0) and every landmark-fitted face mask
kind (surgical / n95 / kn95 / cloth), ``--seeds`` draws each.

* Detection rate: dlib's HOG frontal detector (upsample 1) and MTCNN
  (Flax, facenet-pytorch weights, min face 20). A face counts as detected
  when a box's centre is within 0.5 inter-ocular distances (iod) of the
  landmarks' centre and its width is 1-5 iod.
* Verification: dlib's face ResNet (``teachers/dlib_resnet.py``, the
  Flax port of dlib_face_recognition_resnet_model_v1) on 150x150 chips
  aligned with the *clean* photo's 5-point landmarks (so only recognition is
  measured). Pairs: every masked photo vs every other clean photo (same
  person: Obama x3; different: Obama vs Biden), decided at dlib's 0.6
  Euclidean threshold; clean vs clean as the reference.

Writes ``docs/masked_faces_real.png``, ``docs/masked_faces_synthetic.png``
and ``benchmarks/results/masked_real_photos.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from _common import RESULTS, machine  # noqa: E402
from deocc_jax.data import alignment  # noqa: E402
from deocc_jax.data import dense_landmarks as dl  # noqa: E402
from deocc_jax.data import face_mask_geometry as fmg  # noqa: E402
from deocc_jax.data import masks as mk  # noqa: E402

CONDITIONS = mk.CATEGORIES + tuple(f"facemask:{k}" for k in fmg.FACE_MASK_KINDS)
DOCS = os.path.join(ROOT, "docs")


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


def load_photos(max_side):
  from _photos import face_photos

  out = {}
  for name, img in face_photos().items():
    s = max_side / max(img.shape[:2])
    small = np.asarray(
        Image.fromarray(img).resize(
            (round(img.shape[1] * s), round(img.shape[0] * s)), Image.BILINEAR
        )
    )
    dense = alignment.detect_landmarks68_dlib(small)[0]
    five = dl.canonical5_from_68(dense)
    d5 = alignment.detect_landmarks_dlib(small, order="dlib5")[0]
    region = mk.face_region_from_landmarks(five, *small.shape[:2])
    out[name] = dict(img=small, dense=dense, five=five, dlib5=d5, region=region)
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


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--seeds", type=int, default=4)
  ap.add_argument("--max-side", type=int, default=480)
  ap.add_argument("--sheets-only", action="store_true")
  args = ap.parse_args(argv)
  t0 = time.time()
  photos = load_photos(args.max_side)
  sheets = contact_sheets(photos)
  print("contact sheets:", sheets, flush=True)
  if args.sheets_only:
    return
  import dlib
  from deocc_jax.detection.mtcnn import MTCNN
  from deocc_jax.teachers import dlib_resnet as dr

  hog = dlib.get_frontal_face_detector()
  mtcnn = MTCNN()
  module, variables, meta = dr.load_dlib_resnet()
  thr = float(meta["dist_thresh"])

  def chip(img, p):
    return alignment.align_face(img, p["dlib5"], template="dlib", landmark_order="dlib5")

  clean_emb = {n: dr.embed(module, variables, chip(p["img"], p)) for n, p in photos.items()}
  names = list(photos)
  ident = {n: ("biden" if n == "biden" else "obama") for n in names}
  rows = {"clean": {"hog": [], "mtcnn": [], "pairs": []}}
  rows.update({c: {"hog": [], "mtcnn": [], "pairs": []} for c in CONDITIONS})
  t_det = {"hog": 0.0, "mtcnn": 0.0}
  for n, p in photos.items():
    variants = [("clean", p["img"])] + [
        (c, occlude(p["img"], p["dense"], p["five"], p["region"], c, s)[0])
        for c in CONDITIONS
        for s in range(args.seeds)
    ]
    for cond, img in variants:
      t = time.time()
      hb = [(d.left(), d.top(), d.right(), d.bottom()) for d in hog(img, 1)]
      t_det["hog"] += time.time() - t
      t = time.time()
      mb = mtcnn.detect(img).boxes
      t_det["mtcnn"] += time.time() - t
      rows[cond]["hog"].append(detected(hb, p["five"]))
      rows[cond]["mtcnn"].append(detected(mb, p["five"]))
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
        "same_dist_mean": float(same.mean()),
        "diff_dist_mean": float(diff.mean()),
        "pairs": len(r["pairs"]),
        "accuracy_at_0.6": float(np.mean(correct)),
        "same_rejected": float(np.mean(same >= thr)),
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
  result = {
      "machine": machine(),
      "args": vars(args),
      "threshold": thr,
      "sheets": sheets,
      "conditions": table,
      "summary": summary,
      "seconds": time.time() - t0,
  }
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, "masked_real_photos.json"), "w") as f:
    json.dump(result, f, indent=2)
  lines = [
      f"# Masked real photos (face_recognition 1.3.0's 4 photos, max side {args.max_side} px, "
      f"{args.seeds} draws per condition)",
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
      f"{summary['seconds_per_image']['mtcnn']:.2f} (incl. jit compiles).",
      f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
      f"{result['seconds']:.0f} s in all.",
  ]
  with open(os.path.join(RESULTS, "masked_real_photos.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
