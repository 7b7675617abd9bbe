"""Verification metrics against brute-force references."""

import numpy as np
import pytest

from deocc_jax.evaluation import verification as v


def _data(n=600, seed=0):
  rng = np.random.default_rng(seed)
  same = rng.random(n) < 0.5
  scores = rng.normal(size=n) + 1.5 * same
  scores[:20] = np.round(scores[:20], 1)  # ties
  return scores, same


def _brute_best(scores, same):
  best = (-1, None)
  for t in sorted(set(scores.tolist()) | {np.inf}):
    acc = np.mean((scores >= t) == same)
    if acc > best[0]:
      best = (acc, t)
  return best[1], best[0]


def test_best_threshold_matches_brute_force():
  for seed in range(4):
    s, y = _data(200, seed)
    t, acc = v.best_threshold(s, y)
    bt, bacc = _brute_best(s, y)
    assert acc == pytest.approx(bacc) and t == pytest.approx(bt)


def test_ten_fold_accuracy_matches_brute_force():
  s, y = _data()
  folds = np.arange(len(s)) % 10
  r = v.evaluate_pairs(s, y, folds)
  accs = []
  for f in range(10):
    t, _ = _brute_best(s[folds != f], y[folds != f])
    accs.append(np.mean((s[folds == f] >= t) == y[folds == f]))
  assert r.accuracy_mean == pytest.approx(np.mean(accs))
  assert r.accuracy_std == pytest.approx(np.std(accs))


def test_best_threshold_accuracy_over_all_pairs_is_reported_beside_the_cv_one():
  """The paper's LFW figure: the one threshold with the highest accuracy over all
  pairs, scored on them (a brute-force loop over every threshold)."""
  s, y = _data(500, 5)
  r = v.evaluate_pairs(s, y, np.arange(len(s)) % 10)
  bt, bacc = _brute_best(s, y)
  assert r.accuracy_best_threshold == pytest.approx(bacc, abs=1e-12)
  assert r.best_threshold == pytest.approx(bt)
  summ = r.summary()
  assert summ["accuracy_best_threshold"] == r.accuracy_best_threshold
  assert summ["accuracy"] == r.accuracy_mean != r.accuracy_best_threshold
  # no fold does better than the best single threshold does on all pairs at once
  assert bacc >= min(r.fold_accuracies)


def test_roc_auc_eer_tar_against_brute_force():
  s, y = _data(400, 3)
  pos, neg = s[y], s[~y]
  # AUC = P(score_pos > score_neg) + 0.5 P(tie)
  auc = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
  r = v.evaluate_pairs(s, y, fars=(1e-2, 1e-1))
  assert r.auc == pytest.approx(auc, abs=1e-9)
  for far in (1e-2, 1e-1):
    best = 0.0
    for t in sorted(set(s.tolist())) + [np.inf]:
      if np.mean(neg >= t) <= far:
        best = max(best, np.mean(pos >= t))
    assert r.tar_at_far[far] == pytest.approx(best)
  # EER between the FAR and FRR of the neighbouring thresholds
  ts = np.sort(np.unique(s))
  gaps = [abs(np.mean(neg >= t) - np.mean(pos < t)) for t in ts]
  k = int(np.argmin(gaps))
  assert abs(r.eer - np.mean(neg >= ts[k])) < 0.02


def test_make_pairs_is_balanced_and_folded():
  labels = np.repeat(np.arange(40), 5)
  a, b, same, fold = v.make_pairs(labels, 400, seed=1)
  assert len(a) == 400 and same.sum() == 200
  assert (labels[a[same]] == labels[b[same]]).all() and (labels[a[~same]] != labels[b[~same]]).all()
  assert (a[same] != b[same]).all()
  for f in range(10):
    ids_f = set(labels[a[fold == f]]) | set(labels[b[fold == f]])
    ids_o = set(labels[a[fold != f]]) | set(labels[b[fold != f]])
    assert not ids_f & ids_o  # identities do not cross folds
  with pytest.raises(ValueError, match="too few identities"):
    v.make_pairs(np.arange(5), 20)
