"""Pair verification metrics (the LFW protocol).

Scores are cosine similarities; a pair is called "same" when its score is at
least the threshold. Accuracy follows LFW's 10-fold protocol: for each fold,
the threshold maximising accuracy on the other nine folds is applied to it;
we report the mean and standard deviation over folds. Also ROC, AUC, EER
and TAR at given FARs over all pairs.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
  return np.sum(a * b, axis=1)


def _candidate_thresholds(scores: np.ndarray) -> np.ndarray:
  s = np.unique(scores)
  return np.concatenate([s, [np.inf]])


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
  return float(np.mean((scores >= threshold) == same))


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
  """(threshold, accuracy) maximising accuracy; ties -> the smallest threshold.

  Vectorised over sorted scores: O(n log n).
  """
  scores = np.asarray(scores, np.float64)
  same = np.asarray(same, bool)
  thr = _candidate_thresholds(scores)
  # number predicted "same" with score >= t, split by truth
  pos_sorted = np.sort(scores[same])
  neg_sorted = np.sort(scores[~same])
  tp = len(pos_sorted) - np.searchsorted(pos_sorted, thr, side="left")
  fp = len(neg_sorted) - np.searchsorted(neg_sorted, thr, side="left")
  acc = (tp + (len(neg_sorted) - fp)) / len(scores)
  k = int(np.argmax(acc))
  return float(thr[k]), float(acc[k])


@dataclasses.dataclass
class VerificationResult:
  accuracy_mean: float
  accuracy_std: float
  fold_accuracies: list[float]
  fold_thresholds: list[float]
  auc: float
  eer: float
  tar_at_far: dict[float, float]
  roc_far: np.ndarray
  roc_tar: np.ndarray
  # the paper's LFW figure: the one threshold with the highest accuracy over all
  # pairs, scored on those same pairs (an optimistic bound, not cross-validated)
  accuracy_best_threshold: float = float("nan")
  best_threshold: float = float("nan")

  def summary(self) -> dict[str, float]:
    out = {
        "accuracy": self.accuracy_mean,
        "accuracy_std": self.accuracy_std,
        "accuracy_best_threshold": self.accuracy_best_threshold,
        "best_threshold": self.best_threshold,
        "auc": self.auc,
        "eer": self.eer,
    }
    for far, tar in self.tar_at_far.items():
      out[f"tar@far={far:g}"] = tar
    return out


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(FAR, TAR, thresholds) for thresholds at every distinct score (descending)."""
  scores = np.asarray(scores, np.float64)
  same = np.asarray(same, bool)
  thr = np.concatenate([[np.inf], np.unique(scores)[::-1]])
  pos = np.sort(scores[same])
  neg = np.sort(scores[~same])
  tar = (len(pos) - np.searchsorted(pos, thr, side="left")) / max(len(pos), 1)
  far = (len(neg) - np.searchsorted(neg, thr, side="left")) / max(len(neg), 1)
  return far, tar, thr


def auc_score(far: np.ndarray, tar: np.ndarray) -> float:
  return float(np.trapezoid(tar, far))


def equal_error_rate(far: np.ndarray, tar: np.ndarray) -> float:
  """EER: where FAR = FRR (1 - TAR), linearly interpolated on the ROC."""
  frr = 1.0 - tar
  d = far - frr  # increasing along the curve
  k = int(np.searchsorted(d, 0.0))
  if k == 0:
    return float(far[0])
  if k >= len(d):
    return float(far[-1])
  t = d[k - 1] / (d[k - 1] - d[k]) if d[k] != d[k - 1] else 0.0
  return float(far[k - 1] + t * (far[k] - far[k - 1]))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
  """Largest TAR with FAR <= ``far`` (threshold strictly above enough negatives)."""
  fars, tars, _ = roc_curve(scores, same)
  ok = fars <= far + 1e-12
  return float(tars[ok].max()) if ok.any() else 0.0


def evaluate_pairs(
    scores: np.ndarray,
    same: np.ndarray,
    folds: np.ndarray | None = None,
    num_folds: int = 10,
    fars: tuple[float, ...] = (1e-3, 1e-4),
) -> VerificationResult:
  """The full LFW-style report for a list of pair scores."""
  scores = np.asarray(scores, np.float64)
  same = np.asarray(same, bool)
  if scores.shape != same.shape or scores.ndim != 1:
    raise ValueError(f"scores {scores.shape} and same {same.shape} must be equal 1-D shapes")
  if folds is None:
    folds = np.arange(len(scores)) * num_folds // max(len(scores), 1)
  folds = np.asarray(folds)
  accs, thrs = [], []
  for f in np.unique(folds):
    test = folds == f
    train = ~test
    if not train.any():
      t, _ = best_threshold(scores[test], same[test])
    else:
      t, _ = best_threshold(scores[train], same[train])
    thrs.append(t)
    accs.append(accuracy_at(scores[test], same[test], t))
  far, tar, _ = roc_curve(scores, same)
  t_all, acc_all = best_threshold(scores, same)
  return VerificationResult(
      accuracy_mean=float(np.mean(accs)),
      accuracy_std=float(np.std(accs)),
      fold_accuracies=accs,
      fold_thresholds=thrs,
      auc=auc_score(far, tar),
      eer=equal_error_rate(far, tar),
      tar_at_far={f: tar_at_far(scores, same, f) for f in fars},
      roc_far=far,
      roc_tar=tar,
      accuracy_best_threshold=acc_all,
      best_threshold=t_all,
  )


def paired_difference(acc_a: Sequence[float], acc_b: Sequence[float]) -> dict[str, float]:
  """Per-fold paired difference of two recognisers' fold accuracies (same
  pairs, same folds): mean and std over folds of ``a - b``, and how many folds
  ``a`` wins (ties are not wins). Fold-to-fold variation of the pairs cancels,
  so this is the comparison to quote, not the difference of the means."""
  a, b = np.asarray(acc_a, np.float64), np.asarray(acc_b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
    raise ValueError(f"fold accuracies must be equal-length 1-D lists, got {a.shape} and {b.shape}")
  d = a - b
  return {
      "mean": float(d.mean()),
      "std": float(d.std()),
      "positive": int((d > 0).sum()),
      "folds": int(len(d)),
  }


def make_pairs(
    labels: np.ndarray, num_pairs: int, seed: int = 0, num_folds: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Balanced same / different pairs over a labelled set, LFW-style folds.

  Returns (index_a, index_b, same, fold); half the pairs are matched.
  Folds are disjoint in identities where possible (identities are assigned
  to folds round-robin), as in LFW's view 2.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng([seed, 0x1F])
  ids = rng.permutation(np.unique(labels))
  fold_of_id = {int(i): k % num_folds for k, i in enumerate(ids)}
  per_fold = num_pairs // (2 * num_folds)
  a, b, same, fold = [], [], [], []
  by_id = {int(i): np.nonzero(labels == i)[0] for i in ids}
  for f in range(num_folds):
    f_ids = [i for i in ids.tolist() if fold_of_id[i] == f]
    multi = [i for i in f_ids if len(by_id[i]) >= 2]
    if not multi or len(f_ids) < 2:
      raise ValueError(
          f"fold {f} has too few identities ({len(f_ids)}) to form pairs: "
          f"{len(ids)} identities for {num_folds} folds; use more identities "
          "or fewer folds"
      )
    for _ in range(per_fold):
      i = multi[rng.integers(len(multi))]
      x, y = rng.choice(by_id[i], size=2, replace=False)
      a.append(x)
      b.append(y)
      same.append(True)
      fold.append(f)
    for _ in range(per_fold):
      i, j = rng.choice(len(f_ids), size=2, replace=False)
      a.append(rng.choice(by_id[f_ids[i]]))
      b.append(rng.choice(by_id[f_ids[j]]))
      same.append(False)
      fold.append(f)
  return np.array(a), np.array(b), np.array(same), np.array(fold)
