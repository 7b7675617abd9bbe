"""The occlusion segmenter's evaluator (blind de-occlusion): IoU of the
predicted and the true masks over all pixels of each occlusion condition and
category; table ``segmentation_iou``."""

from __future__ import annotations

import os

import numpy as np

from deocc_jax.data import masks as masks_lib
from deocc_jax.evaluation import protocols, report, streaming
from deocc_jax.evaluation.evaluator import Evaluator


def iou_from_counts(inter: np.ndarray, union: np.ndarray, category: np.ndarray) -> dict[str, float]:
  """``segmentation_stage.iou_per_category`` from per-face intersection / union
  pixel counts: IoU over the union of all pixels of each category's faces
  (1.0 where both masks are empty), plus 'mixed' over every face."""
  category = np.asarray(category).reshape(-1)

  def iou(sel: np.ndarray) -> float:
    i, u = int(inter[sel].sum()), int(union[sel].sum())
    return float(i / u) if u else 1.0

  out = {
      name: iou(category == c)
      for c, name in enumerate(masks_lib.CATEGORIES)
      if (category == c).any()
  }
  out["mixed"] = iou(np.ones(len(category), bool))
  return out


def results(
    ev: Evaluator, views: dict[str, protocols.OccludedView], categories: tuple[str, ...] = ()
) -> dict[str, float]:
  """IoU of predicted and true masks over all pixels of each occlusion
  condition; each of ``categories`` without a view of its own: over the
  mixture's faces whose occluder is of that category."""
  per = {
      name: iou_from_counts(*ev.segmentation_counts(v), v.category)
      for name, v in views.items()
      if streaming.has_mask(v)
  }
  out = {name: p["mixed"] for name, p in per.items()}
  mix = per.get(protocols.MIXTURE, {})
  out.update({c: mix[c] for c in categories if c not in views and c in mix})
  return out


def write(res: dict[str, dict[str, float]], out_dir: str) -> None:
  rows = [{"set": s, "condition": c, "iou": v} for s, per in res.items() for c, v in per.items()]
  report.write_table(
      rows,
      [("set", "evaluation set"), ("condition", "occlusion condition"), ("iou", "IoU")],
      os.path.join(out_dir, "segmentation_iou"),
      title="Occlusion segmenter (blind de-occlusion): IoU of the predicted "
      "mask with the true mask, over all pixels of each condition",
      float_format="{:.3f}",
  )
