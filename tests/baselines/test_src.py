"""SRC: the JAX FISTA l1 solver vs a float64 coordinate-descent Lasso, and
the class residuals vs a numpy loop. (scikit-learn's Lasso is not installed;
the reference solver is written here.)"""

import numpy as np
import pytest

from deocc_jax.baselines import src


def _np_lasso_cd(b, y, lam, sweeps=20000, tol=1e-13):
  """min 1/2 |B w - y|^2 + lam |w|_1 by cyclic coordinate descent, float64."""
  b = b.astype(np.float64)
  y = y.astype(np.float64)
  w = np.zeros(b.shape[1])
  r = y.copy()
  col_sq = np.sum(b * b, 0)
  for _ in range(sweeps):
    biggest = 0.0
    for j in range(b.shape[1]):
      rho = b[:, j] @ r + col_sq[j] * w[j]
      new = np.sign(rho) * max(abs(rho) - lam, 0.0) / col_sq[j]
      if new != w[j]:
        r -= b[:, j] * (new - w[j])
        biggest = max(biggest, abs(new - w[j]))
        w[j] = new
    if biggest < tol:
      break
  return w


def _problem(seed=0, d=20, n=15, p=3):
  rng = np.random.default_rng(seed)
  feats = rng.normal(size=(n, d))
  labels = np.repeat(np.arange(5), 3)
  y = rng.normal(size=(p, d))
  return feats.astype(np.float32), labels, y.astype(np.float32)


@pytest.mark.parametrize("occlusion", [False, True])
def test_fista_matches_coordinate_descent(occlusion):
  feats, labels, y = _problem()
  dic = src.make_dictionary(feats, labels)
  a = np.asarray(dic.atoms, np.float64)
  lam = 0.05
  x, e = src.l1_codes(dic.atoms, y, lam, num_iters=4000, occlusion=occlusion)
  b = np.concatenate([a, np.eye(a.shape[0])], 1) if occlusion else a
  for i in range(len(y)):
    w = _np_lasso_cd(b, y[i], lam)
    np.testing.assert_allclose(np.asarray(x[i]), w[: a.shape[1]], atol=2e-4)
    ref_e = w[a.shape[1] :] if occlusion else np.zeros(a.shape[0])
    np.testing.assert_allclose(np.asarray(e[i]), ref_e, atol=2e-4)
  assert np.count_nonzero(np.asarray(x)) < x.size  # l1 did select


def test_class_residuals_match_loop():
  feats, labels, y = _problem(seed=1)
  dic = src.make_dictionary(feats, labels)
  rng = np.random.default_rng(2)
  x = rng.normal(size=(3, 15)).astype(np.float32)
  e = rng.normal(size=(3, 20)).astype(np.float32)
  got = np.asarray(src.class_residuals(dic.atoms, dic.member, y, x, e))
  a = np.asarray(dic.atoms, np.float64)
  for i in range(3):
    for c in range(5):
      keep = np.where(labels == c, x[i], 0.0)
      ref = np.linalg.norm(y[i] - e[i] - a @ keep)
      np.testing.assert_allclose(got[i, c], ref, rtol=1e-4)


def test_classify_recovers_class_of_a_sparse_combination_with_occlusion():
  rng = np.random.default_rng(3)
  d, classes, per = 60, 6, 4
  feats = rng.normal(size=(classes * per, d)).astype(np.float32)
  labels = np.repeat(np.arange(classes) * 10 + 7, per)  # arbitrary label values
  dic = src.make_dictionary(feats, labels)
  a = np.asarray(dic.atoms)
  probes, truth = [], []
  for c in range(classes):
    cols = np.arange(c * per, (c + 1) * per)
    y = a[:, cols] @ rng.uniform(0.5, 1.0, per)
    y[rng.choice(d, 6, replace=False)] += 3.0  # gross corruption of 10% of the entries
    probes.append(y)
    truth.append(labels[c * per])
  pred, res = src.classify(dic, np.stack(probes), lam=1e-3, num_iters=1000, occlusion=True)
  np.testing.assert_array_equal(pred, truth)
  assert res.shape == (classes, classes)


def test_src_features_and_errors():
  images = np.random.default_rng(0).uniform(-1, 1, (3, 24, 20, 3)).astype(np.float32)
  f = np.asarray(src.src_features(images, (12, 10)))
  gray = images @ np.array([0.299, 0.587, 0.114], np.float32)
  ref = gray.reshape(3, 12, 2, 10, 2).mean(axis=(2, 4)).reshape(3, -1)  # exact 2x2 averages
  np.testing.assert_allclose(f, ref, atol=1e-5)
  # 3 -> 2 cells: [0, 1.5) and [1.5, 3) by hand
  np.testing.assert_allclose(
      src.area_matrix(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]], atol=1e-6
  )
  with pytest.raises(ValueError, match="2 gallery features but 3 labels"):
    src.make_dictionary(np.zeros((2, 4)), [0, 1, 2])
  dic = src.make_dictionary(np.eye(4), [0, 0, 1, 1])
  with pytest.raises(ValueError, match=r"probe features \(2, 5\) must be \(P, 4\)"):
    src.classify(dic, np.zeros((2, 5)))
