"""Verification metrics of the photo benchmarks: AUC, accuracy, TAR at FAR.

Scores are similarities (higher: more alike); a pair is accepted when
``score >= threshold``. Checked against brute-force loops in
``tests/project/test_photo_benchmarks.py``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["auc", "accuracy", "tar_at_far", "lowest_far", "summarize"]


def _split(scores, same) -> tuple[np.ndarray, np.ndarray]:
  s = np.asarray(scores, np.float64)
  y = np.asarray(same, bool)
  if s.shape != y.shape or s.ndim != 1:
    raise ValueError(f"scores {s.shape} and same {y.shape} must be equal 1-d shapes")
  return s[y], s[~y]


def auc(scores, same) -> float:
  """Area under the ROC curve: P(genuine > impostor) + 0.5 P(tie) (Mann-Whitney)."""
  gen, imp = _split(scores, same)
  if not len(gen) or not len(imp):
    return float("nan")
  imp = np.sort(imp)
  below = np.searchsorted(imp, gen, side="left")
  ties = np.searchsorted(imp, gen, side="right") - below
  return float((below.sum() + 0.5 * ties.sum()) / (len(gen) * len(imp)))


def accuracy(scores, same, threshold: float) -> float:
  """Fraction of pairs decided right by ``score >= threshold``."""
  s = np.asarray(scores, np.float64)
  return float(np.mean((s >= threshold) == np.asarray(same, bool)))


def tar_at_far(scores, same, far: float) -> float:
  """The highest true-accept rate over thresholds whose false-accept rate is <= ``far``.

  With ``n`` impostor pairs at most ``floor(far * n)`` may be accepted: the
  threshold sits just above the ``floor(far * n) + 1``-th highest impostor
  score (ties there are all rejected). ``far * n < 1`` means FAR 0.
  """
  gen, imp = _split(scores, same)
  if not len(gen) or not len(imp):
    return float("nan")
  k = math.floor(far * len(imp) + 1e-9)
  if k >= len(imp):
    return 1.0
  cut = np.sort(imp)[::-1][k]
  return float(np.mean(gen > cut))


def lowest_far(n_impostor: int) -> float:
  """The lowest non-zero FAR ``n_impostor`` pairs can measure: one false accept."""
  return 1.0 / n_impostor if n_impostor else float("nan")


def summarize(scores, same, threshold: float | None, far: float = 1e-3) -> dict:
  """AUC, accuracy at ``threshold`` (None: not given), TAR at ``far`` and at the
  lowest FAR the impostor pairs allow, with the pair counts."""
  gen, imp = _split(scores, same)
  low = lowest_far(len(imp))
  return {
      "pairs": int(len(gen) + len(imp)),
      "genuine": int(len(gen)),
      "impostor": int(len(imp)),
      "auc": auc(scores, same),
      "accuracy": None if threshold is None else accuracy(scores, same, threshold),
      "far": far,
      "tar_at_far": tar_at_far(scores, same, far),
      "far_meaningful": bool(len(imp) * far >= 1.0),
      "lowest_far": low,
      "tar_at_lowest_far": tar_at_far(scores, same, low) if len(imp) else float("nan"),
  }
