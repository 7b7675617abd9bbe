"""Inference alignment with MTCNN and with a landmarks file (--align=mtcnn, --landmarks)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers.photos import face_photos
from deocc_jax import inference
from deocc_jax.data import alignment
from deocc_jax.utils import face_geometry as geo
from deocc_jax.data.synthetic_faces import SyntheticFaces
from tests.helpers import paths

ROOT = str(paths.ROOT)
RES = 64


@pytest.fixture(scope="module")
def toy():
  import jax.numpy as jnp

  ds = SyntheticFaces(identities=20, images_per_identity=2, resolution=RES, seed=0)
  tpl = np.mean([ds[i]["landmarks"] for i in range(40)], axis=0)

  def embed(x):
    v = x.reshape(x.shape[0], -1)[:, :48]
    return v / jnp.linalg.norm(v, axis=1, keepdims=True)

  return inference.FaceRecognizer(embed, RES, 0.5, tpl, name="toy")


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
  img = face_photos()["obama2"]
  s = 320 / max(img.shape[:2])
  small = np.asarray(
      Image.fromarray(img).resize(
          (round(img.shape[1] * s), round(img.shape[0] * s)), Image.BILINEAR
      )
  )
  p = tmp_path_factory.mktemp("photos") / "sub" / "obama2.png"
  p.parent.mkdir()
  Image.fromarray(small).save(p)
  return str(p), small


def test_mtcnn_alignment_agrees_with_dlib(toy, photo_file, tmp_path):
  path, img = photo_file
  fm_ = toy.load(path, align="mtcnn")
  fd = toy.load(path, align="dlib")
  iod = np.hypot(*(fd.landmarks[1] - fd.landmarks[0]))
  assert np.abs(fm_.landmarks - fd.landmarks)[:2].max() < 0.15 * iod  # eye centres
  aligned = geo.apply_transform(geo.invert_transform(fm_.transform), fm_.landmarks)
  assert np.abs(aligned - toy.template_landmarks).max() < 3.0
  gray = tmp_path / "gray.png"
  Image.fromarray(np.full((120, 100, 3), 128, np.uint8)).save(gray)
  with pytest.raises(inference.NoFaceError, match="gray.png.*MTCNN found no face"):
    toy.load(str(gray), align="mtcnn")


def test_landmarks_file_aligns_listed_images(toy, photo_file, tmp_path):
  path, img = photo_file
  lm = alignment.detect_landmarks_dlib(img)[0]
  f = tmp_path / "lm.txt"
  rows = " ".join(f"{v:.3f}" for v in lm.ravel())
  f.write_text(
      "1\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x "
      f"leftmouth_y rightmouth_x rightmouth_y\nsub/obama2.png {rows}\n"
      f"other.png {rows}\n"
  )
  table = inference.read_landmarks_file(str(f))
  assert set(table) == {os.path.normpath("sub/obama2.png"), "other.png"}
  assert inference.lookup_landmarks(table, "/x/y/other.png") is not None
  assert inference.lookup_landmarks(table, "/x/sub2/obama2.png") is None
  toy.landmarks_table = None
  with pytest.raises(ValueError, match="not square"):
    toy.load(path, align="none")  # not listed: a non-square photo is refused
  ref = toy.load(path, landmarks=np.round(lm, 3), align="landmarks").face
  toy.landmarks_table = table
  try:
    for align in ("none", "mtcnn", None):
      np.testing.assert_allclose(toy.load(path, align=align).face, ref, atol=1e-6)
  finally:
    toy.landmarks_table = None
  bad = tmp_path / "bad.txt"
  bad.write_text("a.png 1 2 3\n")
  with pytest.raises(ValueError, match=r"bad\.txt:1: expected"):
    inference.read_landmarks_file(str(bad))
  bad.write_text("a.png 1 2 3 4 5 6 7 8 9 x\n")
  with pytest.raises(ValueError, match=r"bad\.txt:1: landmark values must be numbers"):
    inference.read_landmarks_file(str(bad))


def test_cli_landmarks_and_align_flags(photo_file, tmp_path):
  path, _ = photo_file
  bad = tmp_path / "bad_lm.txt"
  bad.write_text("x.png 1 2\n")
  cmd = [
      sys.executable,
      "-m",
      "deocc_jax.infer",
      "verify",
      path,
      path,
      "--config=configs/synthetic.py",
      f"--workdir={tmp_path}",
      "--align=mtcnn",
      f"--landmarks={bad}",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "bad_lm.txt:1: expected" in proc.stderr
  proc = subprocess.run(
      cmd[:-2] + ["--align=sideways"], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode != 0 and "mtcnn" in proc.stderr  # the enum lists it
