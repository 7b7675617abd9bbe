"""Synthetic identity faces: determinism, landmarks, identity structure."""

import numpy as np
import pytest

from deocc_jax.data import synthetic_faces as sf


def test_same_seed_same_images_and_different_seed_differs():
  a = sf.SyntheticFaces(identities=10, images_per_identity=3, resolution=48, seed=3)
  b = sf.SyntheticFaces(identities=10, images_per_identity=3, resolution=48, seed=3)
  c = sf.SyntheticFaces(identities=10, images_per_identity=3, resolution=48, seed=4)
  for i in (0, 7, 29):
    np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
    np.testing.assert_array_equal(a[i]["landmarks"], b[i]["landmarks"])
  assert np.abs(a[5]["image"].astype(int) - c[5]["image"].astype(int)).mean() > 5


@pytest.mark.parametrize("res", [32, 64, 128, 256])
def test_shapes_dtypes_and_landmarks_inside_image(res):
  ds = sf.SyntheticFaces(identities=4, images_per_identity=2, resolution=res)
  r = ds[3]
  assert r["image"].shape == (res, res, 3) and r["image"].dtype == np.uint8
  assert r["landmarks"].shape == (5, 2) and r["face_region"].shape == (res, res)
  lm = r["landmarks"]
  assert (lm > 0).all() and (lm < res).all()
  # Eyes above the nose, nose above the mouth (small rotations only).
  assert lm[0, 1] < lm[2, 1] < lm[3, 1]
  assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]


def test_landmarks_sit_on_the_rendered_features():
  # An eye landmark is on a dark pupil; the face region covers the nose.
  ds = sf.SyntheticFaces(identities=20, images_per_identity=1, resolution=128)
  dark = 0
  for i in range(20):
    r = ds[i]
    n = sf.sample_nuisance(0, i, 0)
    if n.blink:
      continue
    x, y = np.round(r["landmarks"][0]).astype(int)
    dark += r["image"][y, x].mean() < 90
    nx, ny = np.round(r["landmarks"][2]).astype(int)
    assert r["face_region"][ny, nx] > 0.5
  assert dark >= 15


def test_invalid_arguments_raise():
  with pytest.raises(ValueError, match="resolution"):
    sf.SyntheticFaces(resolution=16)
  ds = sf.SyntheticFaces(identities=2, images_per_identity=2)
  with pytest.raises(IndexError, match="out of range"):
    ds[4]


def test_lower_face_correlated_with_upper_but_not_determined():
  # Across identities, z_lower is correlated with A z_upper (rho ~ 0.6).
  ups, lows = zip(*[sf.identity_latent(0, i) for i in range(3000)])
  ups, lows = np.array(ups), np.array(lows)
  # Best linear prediction of the lower code from the upper one.
  coef, *_ = np.linalg.lstsq(ups, lows, rcond=None)
  resid = lows - ups @ coef
  r2 = 1 - resid.var(0) / lows.var(0)
  rho2 = sf.LOWER_FACE_CORRELATION**2
  assert np.all(np.abs(r2 - rho2) < 0.06), r2
  assert np.all(r2 < 0.5)  # far from predictable


def test_same_identity_closer_than_different_identities_in_pixels():
  ds = sf.SyntheticFaces(identities=30, images_per_identity=4, resolution=32, nuisance_strength=0.0)
  # Without geometric nuisance, same-identity images differ only by
  # lighting/expression/background inside the face.
  faces = np.stack([ds[i]["image"] for i in range(len(ds))]).astype(np.float32)
  regions = np.stack([ds[i]["face_region"] for i in range(len(ds))])
  x = (faces * regions[..., None]).reshape(30, 4, -1)
  x = x - x.mean(-1, keepdims=True)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  same = np.mean([x[i, 0] @ x[i, 1] for i in range(30)])
  diff = np.mean([x[i, 0] @ x[(i + 1) % 30, 1] for i in range(30)])
  assert same > diff + 0.05
