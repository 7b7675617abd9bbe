"""One face warp for infer and serving (deocc_jax/utils/face_warp.py), on real
photos: the same aligned face and mask bit for bit, antialiased when shrinking,
and the input checks both share (face size, aligned crops)."""

import json

import numpy as np
import pytest

from deocc_jax import inference, serving
from deocc_jax.data import alignment
from deocc_jax.utils import face_warp

from tests.helpers import photos as photos_lib  # noqa: E402

# the ArcFace 112 template scaled to a 64 px crop (any template works)
TEMPLATE = alignment.get_template("arcface").points * (64 / 112)
RES = 64


@pytest.fixture(scope="module")
def photos():
  """The 4 real photos and their dlib landmarks (canonical order)."""
  pics = photos_lib.face_photos()
  return {n: (img, alignment.detect_landmarks_dlib(img)[0]) for n, img in pics.items()}


def _pair(tmp_path):
  meta = {
      "format": serving.FORMAT,
      "threshold": 0.5,
      "input_kind": "masked",
      "embedding_dim": 4,
      "preprocessing": {"resolution": RES, "template_landmarks": TEMPLATE.tolist()},
  }
  (tmp_path / "metadata.json").write_text(json.dumps(meta))
  rec = serving.ExportedRecognizer(str(tmp_path))
  fr = inference.FaceRecognizer(lambda x: x.reshape(len(x), -1)[:, :4], RES, 0.5, TEMPLATE)
  return fr, rec


def test_infer_and_serving_align_real_photos_identically(photos, tmp_path):
  fr, rec = _pair(tmp_path)
  for name, (img, lm) in photos.items():
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[int(lm[3, 1]) - 10 :, :] = 255  # the lower face and below
    face = fr.load(img, mask=mask, landmarks=lm, name=name)
    x, m = rec.preprocess(img, landmarks=lm, mask=mask, name=name)
    np.testing.assert_array_equal(x, face.face)  # the same warp, bit for bit
    np.testing.assert_array_equal(m, face.mask)
    assert 0.1 < m.mean() < 0.9
    # antialiased: the photo shrinks several times, and the result is the
    # box pre-filtered warp (not plain bilinear sampling)
    scale = np.sqrt(abs(np.linalg.det(face.transform[:, :2])))
    assert scale > 2.0, (name, scale)
    plain = face_warp.warp_affine_pil(img, face.transform, (RES, RES), antialias=False)
    plain = plain * (2.0 / 255.0) - 1.0
    assert np.abs(plain - face.face).mean() > 1e-3
  # an aligned square crop without landmarks: both resize it the same way
  img, lm = photos["obama"]
  crop = np.ascontiguousarray(img[40:240, 100:300])
  np.testing.assert_array_equal(rec.preprocess(crop)[0], fr.load(crop).face)


def test_shared_warp_matches_alignment_and_float64_reference(photos):
  """face_warp's warp is the PIL warp the training-time alignment module has
  (same output to the bit) and, without reduction, plain float64 bilinear."""
  img, lm = photos["biden"]
  from deocc_jax.utils.face_geometry import estimate_similarity

  m = estimate_similarity(TEMPLATE, lm)
  for aa in (True, False):
    np.testing.assert_array_equal(
        face_warp.warp_affine_pil(img, m, (RES, RES), antialias=aa),
        alignment.warp_affine_pil(img, m, (RES, RES), antialias=aa),
    )
  # float64 bilinear reference at a few pixels (no antialiasing)
  out = face_warp.warp_affine_pil(img, m, (RES, RES), antialias=False)
  img64 = img.astype(np.float64)
  for y, x in ((5, 7), (32, 32), (50, 20), (63, 63)):
    sx, sy = m @ np.array([x, y, 1.0])
    x0, y0 = int(np.floor(sx)), int(np.floor(sy))
    fx, fy = sx - x0, sy - y0
    ref = (
        img64[y0, x0] * (1 - fx) * (1 - fy)
        + img64[y0, x0 + 1] * fx * (1 - fy)
        + img64[y0 + 1, x0] * (1 - fx) * fy
        + img64[y0 + 1, x0 + 1] * fx * fy
    )
    np.testing.assert_allclose(out[y, x], ref, atol=2e-3)


def test_input_checks_are_shared(photos, tmp_path):
  fr, rec = _pair(tmp_path)
  img, lm = photos["obama"]
  small = lm.mean(0) + (lm - lm.mean(0)) * (6.0 / face_warp.eye_distance(lm))  # 6 px eyes
  for call in (
      lambda: fr.load(img, landmarks=small, name="p.jpg"),
      lambda: rec.preprocess(img, landmarks=small, name="p.jpg"),
  ):
    with pytest.raises(
        ValueError,
        match=r"p.jpg: the face is too small: 6.0 px .* minimum is 8 px \(a face about 20 px",
    ):
      call()
  tiny = np.zeros((1, 1, 3), np.uint8)
  white = np.full((80, 80, 3), 255, np.uint8)
  for load in (fr.load, rec.preprocess):
    with pytest.raises(ValueError, match=f"1x1, smaller than the model's {RES}x{RES}"):
      load(tiny)
    with pytest.raises(ValueError, match="blank"):
      load(white)
    with pytest.raises(ValueError, match="not square.*landmarks"):
      load(img)
  with pytest.raises(ValueError, match="not square.*--align=mtcnn.*--landmarks=FILE.*crop"):
    fr.load(img)
