"""RPCA (inexact ALM) and Graph-Laplace completion vs float64 numpy references."""

import numpy as np
import pytest

from deocc_jax.baselines import graph_laplace as gl
from deocc_jax.baselines import rpca as rp


def _np_ialm(d, lam=None, tol=1e-5, max_iters=200):
  """Float64 inexact ALM RPCA, transcribed from Lin, Chen & Ma's inexact_alm_rpca.m."""
  d = d.astype(np.float64)
  m, n = d.shape
  lam = 1 / np.sqrt(max(m, n)) if lam is None else lam
  norm_two = np.linalg.svd(d, compute_uv=False)[0]
  y = d / max(norm_two, np.abs(d).max() / lam)
  mu, rho = 1.25 / norm_two, 1.5
  mu_bar = mu * 1e7
  a = np.zeros_like(d)
  e = np.zeros_like(d)
  for _ in range(max_iters):
    t = d - a + y / mu
    e = np.maximum(t - lam / mu, 0) + np.minimum(t + lam / mu, 0)
    u, s, vt = np.linalg.svd(d - e + y / mu, full_matrices=False)
    keep = s > 1 / mu
    a = (u[:, keep] * (s[keep] - 1 / mu)) @ vt[keep]
    z = d - a - e
    y = y + mu * z
    mu = min(mu * rho, mu_bar)
    if np.linalg.norm(z) / np.linalg.norm(d) < tol:
      break
  return a, e


def _low_rank_plus_sparse(seed, m=20, n=30, rank=2, frac=0.05):
  rng = np.random.default_rng(seed)
  low = rng.normal(size=(m, rank)) @ rng.normal(size=(rank, n))
  sparse = np.zeros((m, n))
  idx = rng.choice(m * n, int(frac * m * n), replace=False)
  sparse.flat[idx] = rng.choice([-5.0, 5.0], len(idx))
  return low, sparse


def test_rpca_matches_float64_ialm_and_recovers_the_parts():
  low, sparse = _low_rank_plus_sparse(0)
  d = (low + sparse).astype(np.float32)
  a_ref, e_ref = _np_ialm(d, tol=1e-6, max_iters=500)
  a, e, iters = rp.rpca(d, tol=1e-6, max_iters=500)
  scale = np.abs(d).max()
  np.testing.assert_allclose(np.asarray(a), a_ref, atol=2e-4 * scale)
  np.testing.assert_allclose(np.asarray(e), e_ref, atol=2e-4 * scale)
  assert 5 < int(iters) < 500
  assert np.linalg.norm(np.asarray(a) - low) / np.linalg.norm(low) < 1e-3


def test_rpca_is_batched_per_matrix():
  d = np.stack([sum(_low_rank_plus_sparse(s)) for s in (1, 2)]).astype(np.float32)
  d[1] *= 3.0  # different scale: a different number of sweeps
  a, e, iters = rp.rpca(d)
  for i in range(2):
    a_i, e_i, it_i = rp.rpca(d[i])
    np.testing.assert_allclose(np.asarray(a[i]), np.asarray(a_i), atol=1e-4 * np.abs(d[i]).max())
    assert int(iters[i]) == int(it_i)


def test_rpca_fill_completes_from_a_low_rank_library():
  rng = np.random.default_rng(4)
  h = w = 6
  basis = rng.uniform(-0.5, 0.5, (3, h * w * 3))
  library = (rng.uniform(0.2, 1.0, (12, 3)) @ basis).reshape(12, h, w, 3).astype(np.float32)
  clean = (np.array([[0.6, 0.3, 0.8]]) @ basis).reshape(1, h, w, 3).astype(np.float32)
  mask = np.zeros((1, h, w, 1), np.float32)
  mask[0, 1:3, 2:4] = 1
  masked = np.where(mask > 0.5, 0.9, clean).astype(np.float32)  # a bright occluder
  out = np.asarray(rp.rpca_fill(masked, mask, library))
  np.testing.assert_array_equal(out[mask[..., 0] < 0.5], masked[mask[..., 0] < 0.5])
  stack = np.concatenate([masked.reshape(1, -1), library.reshape(12, -1)])
  a_ref, _ = _np_ialm((stack + 1) / 2)
  ref = (a_ref[0] * 2 - 1).reshape(h, w, 3)
  hole = mask[0, ..., 0] > 0.5
  np.testing.assert_allclose(out[0][hole], ref[hole], atol=2e-3)
  err = np.abs(out[0][hole] - clean[0][hole]).mean()
  assert err < 0.25 * np.abs(masked[0][hole] - clean[0][hole]).mean()
  whole = np.asarray(rp.rpca_fill(masked, None, library))  # no mask: the low-rank face
  np.testing.assert_allclose(whole[0], ref, atol=2e-3)
  with pytest.raises(ValueError, match="must be .* alike"):
    rp.rpca_fill(masked, mask, library[:, :5])


def _np_exemplar(y, m, library, k, ridge):
  known = np.broadcast_to(m < 0.5, y.shape).ravel()
  y = y.astype(np.float64).ravel()
  lib = library.astype(np.float64).reshape(len(library), -1)
  dist = [np.mean((y[known] - f[known]) ** 2) for f in lib]
  nb = lib[np.argsort(dist, kind="stable")[:k]]
  g = nb[:, known] @ nb[:, known].T
  g += ridge * np.trace(g) / k * np.eye(k)
  c = np.linalg.solve(g, nb[:, known] @ y[known])
  return c @ nb


def test_exemplar_matches_float64_reference():
  rng = np.random.default_rng(5)
  library = rng.uniform(-1, 1, (9, 8, 7, 3)).astype(np.float32)
  masked = rng.uniform(-1, 1, (2, 8, 7, 3)).astype(np.float32)
  mask = np.zeros((2, 8, 7, 1), np.float32)
  mask[0, 2:5, 1:4] = 1
  mask[1, 5:8, 3:7] = 1
  got = np.asarray(gl.exemplar_faces(masked, mask, library, neighbours=4, ridge=1e-2))
  for i in range(2):
    ref = _np_exemplar(masked[i], mask[i], library, 4, 1e-2).reshape(8, 7, 3)
    np.testing.assert_allclose(got[i], ref, atol=2e-4)


def _np_graph_laplace(x, m, g, sigma):
  """Dense float64 graph Laplacian over pixels; L_hh d_h = -L_hk d_k."""
  h, w, c = x.shape
  n = h * w
  lap = np.zeros((n, n))
  for r in range(h):
    for col in range(w):
      for dr, dc in ((0, 1), (1, 0)):
        r2, c2 = r + dr, col + dc
        if r2 < h and c2 < w:
          diff = g[r, col] - g[r2, c2]
          wt = 1.0 if sigma is None else np.exp(-np.sum(diff * diff) / sigma**2)
          i, j = r * w + col, r2 * w + c2
          lap[i, i] += wt
          lap[j, j] += wt
          lap[i, j] -= wt
          lap[j, i] -= wt
  hole = m[..., 0].ravel() > 0.5
  out = x.astype(np.float64).reshape(n, c).copy()
  d_known = (x - g).reshape(n, c)[~hole]
  d_hole = np.linalg.solve(lap[np.ix_(hole, hole)], -lap[np.ix_(hole, ~hole)] @ d_known)
  out[hole] = g.reshape(n, c)[hole] + d_hole
  return out.reshape(h, w, c)


@pytest.mark.parametrize("sigma", [0.5, None])
def test_graph_laplace_solve_matches_dense_solve(sigma):
  rng = np.random.default_rng(6)
  x = rng.uniform(-1, 1, (2, 8, 9, 2)).astype(np.float32)
  g = rng.uniform(-1, 1, (2, 8, 9, 2)).astype(np.float32)
  m = np.zeros((2, 8, 9, 1), np.float32)
  m[0, 2:6, 3:7] = 1
  m[1, 0:3, 5:9] = 1  # touches the border
  m[1, 6:8, 0:2] = 1
  got = np.asarray(gl.graph_laplace_solve(x, m, g, sigma, num_iters=200))
  for i in range(2):
    np.testing.assert_allclose(got[i], _np_graph_laplace(x[i], m[i], g[i], sigma), atol=1e-4)


@pytest.mark.parametrize("sigma", [0.25, None])
def test_graph_laplace_removes_a_constant_exemplar_bias(sigma):
  """The visible pixels correct the exemplar: a biased exact exemplar gives the truth."""
  yy, xx = np.mgrid[:12, :12] / 12.0
  phase = np.array([0.0, 1.0, 2.0])
  clean = (0.6 * np.sin(3 * xx[..., None] + 2 * yy[..., None] + phase))[None].astype(np.float32)
  m = np.zeros((1, 12, 12, 1), np.float32)
  m[0, 3:9, 2:10] = 1
  masked = np.where(m > 0.5, 0.0, clean).astype(np.float32)
  out = np.asarray(gl.graph_laplace_solve(masked, m, clean + 0.3, edge_sigma=sigma))
  np.testing.assert_allclose(out, clean, atol=1e-4)
  plain = np.asarray(gl.graph_laplace_solve(masked, m, np.zeros_like(clean), edge_sigma=sigma))
  assert np.abs(plain - clean).max() > 0.05  # harmonic fill alone does not recover it


def test_graph_laplace_fill_uses_the_library_and_keeps_visible_pixels():
  rng = np.random.default_rng(8)
  basis = rng.uniform(-0.5, 0.5, (3, 10 * 10 * 3))
  library = (rng.uniform(0.2, 1, (15, 3)) @ basis).reshape(15, 10, 10, 3).astype(np.float32)
  clean = (np.array([[0.5, 0.7, 0.4]]) @ basis).reshape(1, 10, 10, 3).astype(np.float32)
  m = np.zeros((1, 10, 10, 1), np.float32)
  m[0, 4:8, 2:9] = 1
  masked = np.where(m > 0.5, -1.0, clean).astype(np.float32)
  out = np.asarray(gl.graph_laplace_fill(masked, m, library, neighbours=5))
  visible = m[0, ..., 0] < 0.5
  np.testing.assert_array_equal(out[0][visible], masked[0][visible])
  np.testing.assert_allclose(out, clean, atol=1e-3)  # the clean face is in the library's span
  with pytest.raises(ValueError, match=r"mask must be \(1, 10, 10, 1\)"):
    gl.graph_laplace_fill(masked, m[..., 0], library)


def test_fills_restore_synthetic_faces_under_a_scarf():
  """Behaviour on the protocol's occluders: both fills clearly beat the masked input
  and the mean-face fill inside the hole (library: 30 training faces; the
  16 x 16 centre of 32 px faces, to keep the test fast)."""
  from deocc_jax.data.synthetic_faces import SyntheticFaces
  from deocc_jax.evaluation import protocols

  crop = (slice(None), slice(8, 24), slice(8, 24))
  train = SyntheticFaces(30, 1, resolution=32, seed=0, nuisance_strength=0.5)
  test = SyntheticFaces(2, 1, resolution=32, seed=1, nuisance_strength=0.5)
  library = (np.stack([train[i]["image"] for i in range(len(train))]) / 127.5 - 1)[crop]
  library = library.astype(np.float32)
  records = [test[i] for i in range(len(test))]
  clean = (np.stack([r["image"] for r in records]) / 127.5 - 1)[crop]
  view = protocols.occlude_records(records, "scarf", seed=0)
  masked, mask = view.masked[crop], view.mask[crop]
  hole = mask[..., 0] > 0.5

  def err(x):
    return float(np.abs(np.asarray(x) - clean)[hole].mean())

  mean_fill = np.where(mask > 0.5, library.mean(0), masked)
  worst = min(err(masked), err(mean_fill))
  assert err(gl.graph_laplace_fill(masked, mask, library)) < 0.8 * worst
  assert err(rp.rpca_fill(masked, mask, library)) < 0.9 * worst  # RPCA: the weaker fill
