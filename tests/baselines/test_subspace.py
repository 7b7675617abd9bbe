"""Eigenfaces, LPP and Gabor features vs float64 numpy / scipy references.

scikit-learn is not a dependency of the project, so the PCA reference is a
float64 numpy SVD (a different route from the Gram-matrix eigenvectors of
``fit_pca``)."""

import math

import numpy as np
import pytest
import scipy.linalg

from deocc_jax.baselines import gabor, subspace


def _low_rank_data(n, d, rank=8, seed=0):
  rng = np.random.default_rng(seed)
  basis, _ = np.linalg.qr(rng.normal(size=(d, rank)))
  scales = 10.0 * 0.7 ** np.arange(rank)
  x = (rng.normal(size=(n, rank)) * scales) @ basis.T + 0.01 * rng.normal(size=(n, d))
  return (x + rng.normal(size=d)).astype(np.float32)


def _sign_fixed(v):
  v = v.copy()
  for j in range(v.shape[1]):
    if v[np.argmax(np.abs(v[:, j])), j] < 0:
      v[:, j] *= -1
  return v


@pytest.mark.parametrize("n,d", [(30, 50), (60, 20)])  # Gram route, covariance route
def test_pca_matches_float64_svd(n, d):
  x = _low_rank_data(n, d)
  model = subspace.fit_pca(x, 5)
  x64 = x.astype(np.float64)
  mean = x64.mean(0)
  _, _, vt = np.linalg.svd(x64 - mean, full_matrices=False)
  ref = _sign_fixed(vt[:5].T)
  np.testing.assert_allclose(np.asarray(model.mean), mean, atol=1e-5)
  np.testing.assert_allclose(np.asarray(model.proj), ref, atol=2e-4)
  emb = np.asarray(subspace.embed(model, x[:7]))
  np.testing.assert_allclose(emb, (x64[:7] - mean) @ ref, rtol=1e-4, atol=2e-3)


def test_pca_rejects_bad_dims_and_inputs():
  x = _low_rank_data(10, 12)
  with pytest.raises(ValueError, match="pca dims must be in"):
    subspace.fit_pca(x, 10)
  model = subspace.fit_pca(x, 3)
  with pytest.raises(ValueError, match="inputs have 11 features, the model expects 12"):
    subspace.embed(model, x[:, :11])
  with pytest.raises(ValueError, match="unknown metric"):
    subspace.nearest_neighbour(x, np.arange(10), x, metric="l1")


def _np_lpp(x, dims, pca_dims, k):
  """Independent float64 LPP: SVD PCA, looped kNN graph, scipy generalized eigh."""
  x = x.astype(np.float64)
  mean = x.mean(0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  p = vt[:pca_dims].T
  z = (x - mean) @ p
  n = len(z)
  d2 = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      d2[i, j] = np.sum((z[i] - z[j]) ** 2)
  adj = np.zeros((n, n), bool)
  for i in range(n):
    order = [j for j in np.argsort(d2[i], kind="stable") if j != i]
    for j in order[:k]:
      adj[i, j] = adj[j, i] = True
  edges = [(i, j) for i in range(n) for j in range(n) if adj[i, j]]
  t = sum(d2[i, j] for i, j in edges) / len(edges)
  w = np.zeros((n, n))
  for i, j in edges:
    w[i, j] = math.exp(-d2[i, j] / t)
  deg = np.diag(w.sum(1))
  evals, a = scipy.linalg.eigh(z.T @ (deg - w) @ z, z.T @ deg @ z)  # ascending
  return w, evals, _sign_fixed(p @ a[:, :dims])


def test_lpp_matches_float64_reference():
  x = _low_rank_data(40, 30, rank=12, seed=1)
  w_ref, _, proj_ref = _np_lpp(x, dims=4, pca_dims=8, k=4)
  model = subspace.fit_lpp(x, dims=4, pca_dims=8, neighbours=4)
  pca = subspace.fit_pca(x, 8)
  w, _ = subspace.knn_heat_graph(subspace.embed(pca, x), 4)
  np.testing.assert_allclose(np.asarray(w), w_ref, atol=1e-4)
  scale = np.abs(proj_ref).max(0)
  np.testing.assert_allclose(np.asarray(model.proj) / scale, proj_ref / scale, atol=2e-3)


def test_lpp_rejects_bad_sizes():
  x = _low_rank_data(10, 12)
  with pytest.raises(ValueError, match="lpp dims must be in"):
    subspace.fit_lpp(x, dims=6, pca_dims=5)
  with pytest.raises(ValueError, match="neighbours must be in"):
    subspace.fit_lpp(x, dims=2, pca_dims=5, neighbours=10)


def _np_kernel(size, v, u, orientations):
  """psi_{u,v} sampled by loops (Liu & Wechsler 2002)."""
  k_max, f, sigma = math.pi / 2, math.sqrt(2), 2 * math.pi
  kv = k_max / f**v
  phi = math.pi * u / orientations
  out = np.zeros((size, size), complex)
  for row in range(size):
    for col in range(size):
      zx, zy = col - size // 2, row - size // 2
      env = kv**2 / sigma**2 * math.exp(-(kv**2) * (zx * zx + zy * zy) / (2 * sigma**2))
      wave = complex(
          math.cos(kv * (math.cos(phi) * zx + math.sin(phi) * zy)),
          math.sin(kv * (math.cos(phi) * zx + math.sin(phi) * zy)),
      )
      out[row, col] = env * (wave - math.exp(-(sigma**2) / 2))
  return out


def test_gabor_bank_matches_formula_and_is_dc_free():
  bank = gabor.gabor_bank(size=7, scales=2, orientations=3)
  assert bank.real.shape == (6, 7, 7)
  for v in range(2):
    for u in range(3):
      ref = _np_kernel(7, v, u, 3)
      np.testing.assert_allclose(np.asarray(bank.real[v * 3 + u]), ref.real, atol=1e-6)
      np.testing.assert_allclose(np.asarray(bank.imag[v * 3 + u]), ref.imag, atol=1e-6)
  big = gabor.gabor_bank(size=63)
  assert big.real.shape == (40, 63, 63)
  for i in range(16):  # the two finest scales fit in the window: zero mean
    k = np.asarray(big.real[i], np.float64)
    assert abs(k.sum()) < 1e-3 * np.abs(k).sum(), i


def test_gabor_features_match_numpy_loops():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 10, 9, 3)).astype(np.float32)
  size, stride = 5, 2
  bank = gabor.gabor_bank(size=size, scales=2, orientations=3)
  feats = np.asarray(gabor.gabor_features(images, bank, stride))
  gray = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  p = size // 2
  ref = []
  for img in gray:
    padded = np.pad(img, p, mode="edge")
    maps = []
    for v in range(2):
      for u in range(3):
        ker = _np_kernel(size, v, u, 3)
        m = np.zeros(img.shape)
        for r in range(img.shape[0]):
          for c in range(img.shape[1]):
            m[r, c] = abs(np.sum(padded[r : r + size, c : c + size] * ker))
        m = m[1::2, 1::2]
        maps.append(((m - m.mean()) / m.std()).ravel())
    ref.append(np.concatenate(maps))
  np.testing.assert_allclose(feats, np.stack(ref), atol=2e-4)


def test_gabor_rejects_bad_input():
  with pytest.raises(ValueError, match="odd"):
    gabor.gabor_bank(size=8)
  with pytest.raises(ValueError, match=r"images must be \(N, H, W\)"):
    gabor.gabor_features(np.zeros((2, 8, 8, 2), np.float32), gabor.gabor_bank(size=3))
