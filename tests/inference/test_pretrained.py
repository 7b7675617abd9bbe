"""infer with a real pretrained recogniser and no training run: dlib's face
ResNet (weights from the face-recognition-models wheel), on the 4 real photos,
against dlib's own pipeline (detector, 5-point predictor, get_face_chip,
compute_face_descriptor)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deocc_jax.inference import pretrained

from tests.helpers import paths

ROOT = str(paths.ROOT)
from tests.helpers import photos as photos_lib  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  d = tmp_path_factory.mktemp("photos")
  pics = photos_lib.face_photos()
  for n, img in pics.items():
    Image.fromarray(img).save(d / f"{n}.png")
  return d, pics


def _dlib_reference(pics):
  """dlib's own descriptors and chips (the face_recognition package's pipeline)."""
  import dlib
  import face_recognition_models as frm

  det = dlib.get_frontal_face_detector()
  sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
  net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
  out = {}
  for n, img in pics.items():
    shape = sp(img, det(img, 1)[0])
    chip = np.asarray(dlib.get_face_chip(img, shape, size=150, padding=0.25))
    out[n] = (np.asarray(net.compute_face_descriptor(img, shape), np.float64), chip)
  return out


@pytest.mark.slow
def test_dlib_recognizer_matches_dlibs_own_pipeline(photos):
  d, pics = photos
  ref = _dlib_reference(pics)
  fr = pretrained.from_teacher("dlib")
  assert fr.resolution == 150 and fr.input_kind == "clean" and fr.name == "dlib"
  names = list(pics)
  faces = [fr.load(str(d / f"{n}.png"), align="dlib") for n in names]
  for n, f in zip(names, faces):  # dlib's chip protocol (fitted on canonical points)
    diff = np.abs((f.face + 1.0) * 127.5 - ref[n][1].astype(np.float64))
    assert diff.mean() < 4.0, (n, diff.mean())
  emb = fr.embed_prepared(np.stack([f.face for f in faces]))
  want = np.stack([ref[n][0] / np.linalg.norm(ref[n][0]) for n in names])
  agree = np.sum(emb * want, axis=1)
  assert agree.min() > 0.99, agree
  for i, a in enumerate(names):
    for j, b in enumerate(names):
      if i < j:
        same = a.startswith("obama") == b.startswith("obama")
        score = float(fr.cosine(emb[i], emb[j]))
        dist = np.linalg.norm(ref[a][0] - ref[b][0])
        assert (score >= fr.threshold) == same == (dist < 0.6), (a, b, score, dist)


@pytest.mark.slow
def test_cli_verify_and_pairs_with_dlib_without_a_run(photos, tmp_path):
  d, _ = photos
  (d / "pairs.txt").write_text("obama.png obama2.png\nobama.png biden.png\nobama3.png obama2.png\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  base = [sys.executable, "-m", "deocc_jax.infer", "verify", "--recognizer=dlib", "--align=dlib"]
  r = subprocess.run(
      base + ["--pairs_file=pairs.txt"],
      cwd=d,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout)
  assert out["recognizer"] == "dlib" and out["checkpoint_steps"] == {}
  assert [p["same"] for p in out["pairs"]] == [True, False, True]
  assert out["threshold"] == pretrained.DLIB_THRESHOLD
  assert "warning" not in r.stderr  # a real recogniser: no synthetic-data warning
  r = subprocess.run(
      base + ["obama.png", "biden.png", "--input_kind=clean"],
      cwd=d,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert r.returncode == 1 and "does not apply to a pretrained" in r.stderr
