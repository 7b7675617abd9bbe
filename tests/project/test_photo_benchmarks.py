"""The verification metrics of the photo benchmarks (``benchmarks/_photo_metrics.py``)
against brute-force float64 loops over every threshold, on random scores with ties."""

from __future__ import annotations


import numpy as np
import pytest


from benchmarks import _photo_metrics as pm


def _brute_auc(gen, imp):
  total = 0.0
  for g in gen:
    for i in imp:
      total += 1.0 if g > i else 0.5 if g == i else 0.0
  return total / (len(gen) * len(imp))


def _brute_tar(gen, imp, far):
  """Max TAR over every threshold t (each score and +inf) with FAR(t) <= far."""
  gen, imp, best = np.asarray(gen), np.asarray(imp), 0.0
  for t in list(gen) + list(imp) + [np.inf]:
    if np.mean(imp >= t) <= far + 1e-12:
      best = max(best, float(np.mean(gen >= t)))
  return best


def _cases():
  rng = np.random.default_rng(0)
  for n_gen, n_imp, levels in [(7, 13, 0), (40, 300, 0), (25, 1200, 0), (30, 50, 6), (5, 9, 2)]:
    gen = rng.normal(0.7, 0.3, n_gen)
    imp = rng.normal(0.2, 0.3, n_imp)
    if levels:  # coarse scores: many ties within and across the two sets
      gen, imp = np.round(gen * levels) / levels, np.round(imp * levels) / levels
    yield gen, imp


@pytest.mark.parametrize("case", list(range(5)))
def test_metrics_match_brute_force(case):
  gen, imp = list(_cases())[case]
  scores = np.concatenate([gen, imp])
  same = np.r_[np.ones(len(gen), bool), np.zeros(len(imp), bool)]
  perm = np.random.default_rng(case).permutation(len(scores))
  scores, same = scores[perm], same[perm]
  assert pm.auc(scores, same) == pytest.approx(_brute_auc(gen, imp), abs=1e-12)
  for far in (0.0, 1e-3, 0.01, 0.1, pm.lowest_far(len(imp)), 0.5, 1.0):
    assert pm.tar_at_far(scores, same, far) == pytest.approx(
        _brute_tar(gen, imp, far), abs=1e-12
    ), far
  for t in (0.0, 0.3, 0.5):
    ref = (sum(g >= t for g in gen) + sum(i < t for i in imp)) / len(scores)
    assert pm.accuracy(scores, same, t) == pytest.approx(ref, abs=1e-12)
  s = pm.summarize(scores, same, 0.5)
  assert (s["genuine"], s["impostor"]) == (len(gen), len(imp))
  assert s["far_meaningful"] == (len(imp) >= 1000)
  assert s["lowest_far"] == pytest.approx(1 / len(imp))


def test_separable_and_inverted_scores():
  same = np.array([1, 1, 1, 0, 0, 0], bool)
  good = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3])
  assert pm.auc(good, same) == 1.0 and pm.tar_at_far(good, same, 0.0) == 1.0
  assert pm.auc(-good, same) == 0.0 and pm.tar_at_far(-good, same, 0.0) == 0.0
  assert pm.accuracy(good, same, 0.5) == 1.0
  with pytest.raises(ValueError, match="shapes"):
    pm.auc(good, same[:3])
