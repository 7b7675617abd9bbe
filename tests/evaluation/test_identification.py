"""Identification metrics vs a brute-force float64 numpy loop."""

import numpy as np
import pytest

from deocc_jax.evaluation import identification as ident


def _brute_ranks(g, gl, p, pl):
  """Per probe: best cosine per identity, rank with ties -> smaller label first."""
  ranks = []
  for i in range(len(p)):
    best = {}
    for j in range(len(g)):
      s = float(np.dot(p[i], g[j]) / (np.linalg.norm(p[i]) * np.linalg.norm(g[j])))
      best[int(gl[j])] = max(best.get(int(gl[j]), -np.inf), s)
    order = sorted(best, key=lambda lab: (-best[lab], lab))
    ranks.append(order.index(int(pl[i])) + 1)
  return np.array(ranks)


def _data(seed=0, n_ids=12, per_id=3, n_probe=40, dim=8, noise=1.2):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(n_ids, dim))
  gl = np.repeat(np.arange(n_ids) * 7 + 3, per_id)  # non-contiguous labels
  g = centres[gl // 7] + noise * rng.normal(size=(len(gl), dim))
  pidx = rng.integers(0, n_ids, n_probe)
  p = centres[pidx] + noise * rng.normal(size=(n_probe, dim))
  perm = rng.permutation(len(gl))
  return g[perm].astype(np.float32), gl[perm], p.astype(np.float32), pidx * 7 + 3


@pytest.mark.parametrize("seed", [0, 1])
def test_rank_k_and_cmc_match_brute_force(seed):
  g, gl, p, pl = _data(seed)
  ref = _brute_ranks(g.astype(np.float64), gl, p.astype(np.float64), pl)
  np.testing.assert_array_equal(ident.probe_ranks(g, gl, p, pl), ref)
  assert 0.0 < ident.rank_k_accuracy(g, gl, p, pl, k=1) < 1.0  # non-trivial data
  for k in (1, 3, 5):
    assert ident.rank_k_accuracy(g, gl, p, pl, k=k) == pytest.approx(np.mean(ref <= k))
  cmc = ident.cmc_curve(g, gl, p, pl, max_rank=12)
  np.testing.assert_allclose(cmc, [np.mean(ref <= k) for k in range(1, 13)])
  assert cmc[-1] == 1.0 and np.all(np.diff(cmc) >= 0)
  assert len(ident.cmc_curve(g, gl, p, pl)) == 12


def test_best_image_per_identity():
  # identity 5 has one far and one exact image: its score is the exact one.
  g = np.array([[1, 0], [0, 1], [0.9, 0.1]], np.float32)
  gl = np.array([5, 5, 9])
  p = np.array([[0, 1]], np.float32)
  assert ident.probe_ranks(g, gl, p, [5])[0] == 1
  assert ident.probe_ranks(g, gl, p, [9])[0] == 2


def test_ties_break_by_smaller_label():
  g = np.array([[1, 0], [1, 0], [0, 1]], np.float32)  # labels 4 and 2 identical images
  gl = np.array([4, 2, 7])
  p = np.array([[1, 0], [2, 0]], np.float32)
  np.testing.assert_array_equal(ident.probe_ranks(g, gl, p, [2, 4]), [1, 2])
  # independent of gallery row order
  np.testing.assert_array_equal(ident.probe_ranks(g[::-1], gl[::-1], p, [2, 4]), [1, 2])
  assert ident.rank_k_accuracy(g, gl, p, [2, 4], k=1) == 0.5


def test_absent_probe_identity_raises():
  g, gl, p, pl = _data()
  pl = pl.copy()
  pl[3] = 999
  with pytest.raises(ValueError, match="absent from the gallery.*999"):
    ident.rank_k_accuracy(g, gl, p, pl)
  with pytest.raises(ValueError, match="absent"):
    ident.cmc_curve(g, gl, p, pl, max_rank=5)


def test_format_cmc_table():
  t = ident.format_cmc_table({"student": np.array([0.5, 0.75, 1.0])}, ranks=(1, 2, 5))
  lines = t.splitlines()
  assert lines[0] == "| method | rank-1 | rank-2 | rank-5 |"
  assert lines[2] == "| student | 50.00 | 75.00 | - |"
