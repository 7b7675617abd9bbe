"""Landmark-rasterised face-parsing labels against a brute-force per-pixel reference."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from deocc_jax.data import face_parsing as fp
from deocc_jax.data.masks import face_region_from_landmarks
from deocc_jax.data.synthetic_faces import SyntheticFaces
from deocc_jax.models.face_parser import NUM_PARSING_CLASSES

# A canonical face: eyes 1 apart on the x axis, nose 0.7 below, mouth 1.2 below.
_CANON = np.array([[-0.5, 0.0], [0.5, 0.0], [0.05, 0.7], [-0.38, 1.2], [0.36, 1.22]])


def _landmarks(rng: np.random.Generator, size: int) -> np.ndarray:
  """Canonical landmarks under a random similarity (rotation, scale, shift)."""
  angle = rng.uniform(-0.5, 0.5)
  scale = rng.uniform(0.25, 0.4) * size
  rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  centre = np.array([size / 2, size * 0.38]) + rng.uniform(-2, 2, 2)
  jitter = rng.normal(0, 0.03, _CANON.shape)
  return ((_CANON + jitter) @ rot.T * scale + centre).astype(np.float64)


def _reference(lm: np.ndarray, skin: np.ndarray) -> np.ndarray:
  """Per-pixel loop, float64: rotate each pixel into the eye-line frame by the
  eye line's angle, flip v if the mouth lies on its negative side, test the
  ellipses; precedence eyes > mouth > nose > skin > background."""
  h, w = skin.shape
  le, re_, nose, ml, mr = (np.asarray(p, np.float64) for p in lm)
  theta = math.atan2(re_[1] - le[1], re_[0] - le[0])
  c, s = math.cos(theta), math.sin(theta)
  d = math.hypot(re_[0] - le[0], re_[1] - le[1])
  mid = (le + re_) / 2
  mouth = (ml + mr) / 2
  flip = -1.0 if (-(mouth[0] - mid[0]) * s + (mouth[1] - mid[1]) * c) < 0 else 1.0

  def inside(px, py, cx, cy, ru, rv):
    dx, dy = px - cx, py - cy
    u = dx * c + dy * s
    v = flip * (-dx * s + dy * c)
    return (u / ru) ** 2 + (v / rv) ** 2 <= 1.0

  nose_c = nose - 0.2 * d * flip * np.array([-s, c])
  half_mouth = math.hypot(mr[0] - ml[0], mr[1] - ml[1]) / 2
  out = np.zeros((h, w), np.int32)
  for i in range(h):
    for j in range(w):
      x, y = float(j), float(i)
      if any(inside(x, y, e[0], e[1], 0.22 * d, 0.11 * d) for e in (le, re_)):
        out[i, j] = 2
      elif inside(x, y, mouth[0], mouth[1], half_mouth + 0.08 * d, 0.16 * d):
        out[i, j] = 4
      elif inside(x, y, nose_c[0], nose_c[1], 0.2 * d, 0.3 * d):
        out[i, j] = 3
      elif skin[i, j] > 0.5:
        out[i, j] = 1
  return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_match_brute_force_reference(seed):
  rng = np.random.default_rng(seed)
  size = 32
  lm = _landmarks(rng, size)
  region = (rng.uniform(size=(size, size)) > 0.3).astype(np.float32)  # any skin map
  got = fp.parsing_labels(lm, size, size, face_region=region)
  np.testing.assert_array_equal(got, _reference(lm, region))
  # without a face region the skin is masks.face_region_from_landmarks
  got = fp.parsing_labels(lm, size, 24)
  np.testing.assert_array_equal(got, _reference(lm, face_region_from_landmarks(lm, size, 24)))
  assert got.dtype == np.int32 and set(np.unique(got)) == set(range(fp.NUM_CLASSES))


def test_labels_do_not_depend_on_the_eye_order():
  lm = _landmarks(np.random.default_rng(3), 32)
  swapped = lm[[1, 0, 2, 4, 3]]
  region = np.ones((32, 32), np.float32)
  np.testing.assert_array_equal(
      fp.parsing_labels(lm, 32, 32, region), fp.parsing_labels(swapped, 32, 32, region)
  )


def test_jax_labels_match_numpy_up_to_boundary_rounding():
  rng = np.random.default_rng(4)
  lm = np.stack([_landmarks(rng, 32) for _ in range(3)])
  regions = (rng.uniform(size=(3, 32, 32)) > 0.5).astype(np.float32)
  run = jax.jit(fp.parsing_labels_jax, static_argnums=(1, 2))
  for reg in (regions, None):
    want = fp.parsing_labels_batch(lm, 32, 32, reg)
    got = np.asarray(run(lm.astype(np.float32), 32, 32, reg))
    assert got.shape == (3, 32, 32) and got.dtype == np.int32
    assert np.mean(got != want) <= 0.005, np.mean(got != want)


def test_synthetic_faces_get_parts_where_their_landmarks_are():
  faces = SyntheticFaces(identities=3, images_per_identity=1, resolution=64, seed=0)
  for k in range(3):
    rec = faces[k]
    lab = fp.parsing_labels(rec["landmarks"], 64, 64, rec["face_region"])
    lm = np.rint(rec["landmarks"]).astype(int)
    assert lab[lm[0, 1], lm[0, 0]] == fp.EYES and lab[lm[1, 1], lm[1, 0]] == fp.EYES
    assert lab[lm[2, 1], lm[2, 0]] == fp.NOSE
    mouth = np.rint(rec["landmarks"][3:].mean(0)).astype(int)
    assert lab[mouth[1], mouth[0]] == fp.MOUTH
    frac = fp.class_fractions(lab)
    assert abs(frac.sum() - 1) < 1e-9 and np.all(frac > 0.002), frac
    # skin only where the record's face region is
    assert np.all(rec["face_region"][lab == fp.SKIN] > 0.5)


@pytest.mark.parametrize(
    "lm,region,match",
    [
        (np.zeros((4, 2)), None, "landmarks must have shape"),
        (np.tile([[5.0, 5.0]], (5, 1)), None, "degenerate"),
        (_CANON * 8 + 10, np.ones((16, 20)), "face_region must have shape"),
    ],
)
def test_bad_inputs_are_refused(lm, region, match):
  with pytest.raises(ValueError, match=match):
    fp.parsing_labels(lm, 32, 32, region)


def test_batch_shapes_are_checked_and_classes_agree_with_the_parser():
  with pytest.raises(ValueError, match=r"\(B, 5, 2\)"):
    fp.parsing_labels_batch(np.zeros((5, 2)), 16, 16)
  with pytest.raises(ValueError, match="face_regions must have shape"):
    fp.parsing_labels_batch(np.zeros((2, 5, 2)), 16, 16, np.ones((1, 16, 16)))
  with pytest.raises(ValueError, match=r"\(B, 5, 2\)"):
    fp.parsing_labels_jax(np.zeros((5, 2)), 16, 16)
  assert fp.NUM_CLASSES == NUM_PARSING_CLASSES == len(fp.CLASSES) == 5
