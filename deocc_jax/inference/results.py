"""What :class:`~deocc_jax.inference.recognizer.FaceRecognizer` returns: aligned
faces, prepared (completed) batches and verification decisions."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Face", "Prepared", "Verification", "PairScore"]


@dataclasses.dataclass(frozen=True)
class Face:
  """An aligned face (and its aligned mask, when one was given)."""

  face: np.ndarray  # (R, R, 3) float32 in [-1, 1]
  mask: np.ndarray | None  # (R, R, 1) float32 {0, 1}, or None
  source: str  # file path, or a name for arrays
  shape: tuple[int, int]  # original (H, W)
  transform: np.ndarray  # (2, 3) crop -> original image pixel map
  landmarks: np.ndarray | None  # (5, 2) landmarks in the original image (given / detected)


@dataclasses.dataclass(frozen=True)
class Prepared:
  """Faces ready for the recogniser."""

  faces: np.ndarray  # (N, R, R, 3) the aligned inputs
  completed: np.ndarray  # (N, R, R, 3) what is embedded
  masks: np.ndarray  # (N, R, R, 1) the masks used (zeros for 'none')
  mask_sources: tuple[str, ...]  # per face: 'given' | 'predicted' | 'none'


@dataclasses.dataclass(frozen=True)
class Verification:
  score: float  # cosine similarity (float64)
  threshold: float
  same: bool  # score >= threshold
  masks: tuple[np.ndarray, np.ndarray]  # (R, R, 1) masks used
  mask_sources: tuple[str, str]  # 'given' | 'predicted' | 'none'
  completed: tuple[np.ndarray, np.ndarray]  # (R, R, 3) the faces embedded

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready summary (scores and mask summaries, no arrays)."""
    return {
        "score": self.score,
        "threshold": self.threshold,
        "same": self.same,
        "mask_a": {"source": self.mask_sources[0], "coverage": float(np.mean(self.masks[0] > 0.5))},
        "mask_b": {"source": self.mask_sources[1], "coverage": float(np.mean(self.masks[1] > 0.5))},
    }


class PairScore(NamedTuple):
  """The decision on one pair of :meth:`FaceRecognizer.verify_pairs` (no arrays)."""

  score: float
  threshold: float
  same: bool
  mask_sources: tuple[str, str]
  mask_coverages: tuple[float, float]

  def to_dict(self) -> dict[str, Any]:
    """The same fields as :meth:`Verification.to_dict`."""
    return {
        "score": self.score,
        "threshold": self.threshold,
        "same": self.same,
        "mask_a": {"source": self.mask_sources[0], "coverage": self.mask_coverages[0]},
        "mask_b": {"source": self.mask_sources[1], "coverage": self.mask_coverages[1]},
    }
