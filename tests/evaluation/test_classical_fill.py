"""Classical fills vs float64 numpy references."""

import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.evaluation import classical_fill as cf


def _np_jacobi(x, m, iters):
  """Independent float64 reference: explicit loops over hole pixels."""
  x = x.astype(np.float64)
  hole = m[..., 0] > 0.5
  b, h, w, c = x.shape
  out = x.copy()
  for i in range(b):
    for ch in range(c):
      out[i, ..., ch][hole[i]] = x[i, ..., ch][~hole[i]].mean()
  for _ in range(iters):
    prev = out.copy()
    for i, yy, xx in zip(*np.nonzero(hole)):
      nb = [
          prev[i, max(yy - 1, 0), xx],
          prev[i, min(yy + 1, h - 1), xx],
          prev[i, yy, max(xx - 1, 0)],
          prev[i, yy, min(xx + 1, w - 1)],
      ]
      out[i, yy, xx] = sum(nb) / 4.0
  return out


def _batch(seed=0, b=2, r=16):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, (b, r, r, 3)).astype(np.float32)
  m = np.zeros((b, r, r, 1), np.float32)
  m[0, 3:9, 4:12] = 1
  m[1, 0:5, 10:16] = 1  # touches the border
  m[1, 12:14, 2:4] = 1
  return x, m


def test_outside_mask_unchanged():
  x, m = _batch()
  mean = np.random.default_rng(1).uniform(-1, 1, x.shape[1:]).astype(np.float32)
  for out in (cf.diffusion_fill(x, m, num_iters=7), cf.mean_face_fill(x, m, mean)):
    out = np.asarray(out)
    keep = m[..., 0] < 0.5
    np.testing.assert_array_equal(out[keep], x[keep])  # bit-exact
    assert not np.allclose(out[~keep], x[~keep])


@pytest.mark.parametrize("iters", [0, 1, 5])
def test_diffusion_matches_numpy_jacobi(iters):
  x, m = _batch()
  out = np.asarray(cf.diffusion_fill(x, m, num_iters=iters))
  np.testing.assert_allclose(out, _np_jacobi(x, m, iters), atol=1e-5)


def test_diffusion_recovers_linear_ramp():
  r = 32
  yy, xx = np.mgrid[:r, :r].astype(np.float32)
  ramp = (0.04 * xx - 0.03 * yy + 0.1)[None, ..., None] * np.array([1.0, -0.5, 0.3], np.float32)
  ramp = np.clip(ramp, -1, 1).astype(np.float32)
  m = np.zeros((1, r, r, 1), np.float32)
  m[0, 9:21, 8:22] = 1
  x = np.where(m > 0.5, 0.9, ramp).astype(np.float32)  # garbage inside the hole
  hole = m[..., 0] > 0.5
  err0 = np.abs(np.asarray(cf.diffusion_fill(x, m, num_iters=0)) - ramp)[hole].max()
  err = np.abs(np.asarray(cf.diffusion_fill(x, m, num_iters=800)) - ramp)[hole].max()
  assert err0 > 0.1
  assert err < 1e-2, err


def test_mean_face_fill_vs_numpy():
  x, m = _batch()
  faces = np.random.default_rng(3).uniform(-1, 1, (10, 16, 16, 3)).astype(np.float32)
  mean_arr = cf.compute_mean_face(faces)
  batches = [{"clean": faces[:4]}, {"clean": faces[4:]}, {"clean": faces * 0 + 5}]
  mean_it = cf.compute_mean_face(iter(batches), max_batches=2)
  ref_mean = faces.astype(np.float64).mean(0)
  np.testing.assert_allclose(mean_arr, ref_mean, atol=1e-6)
  np.testing.assert_allclose(mean_it, ref_mean, atol=1e-6)
  out = np.asarray(cf.mean_face_fill(jnp.asarray(x), jnp.asarray(m), mean_arr))
  ref = x * (1 - m) + ref_mean[None] * m
  np.testing.assert_allclose(out, ref, atol=1e-6)
