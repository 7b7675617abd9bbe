"""Face geometry and image checks in numpy only, shared by training-time
alignment (``deocc_jax.data.alignment``), inference (``deocc_jax.inference``) and
serving (``deocc_jax.serving``, which must stay free of Flax and the configs: this
module imports numpy and nothing else).

Points are (x, y) pixels with the origin at the centre of the top-left pixel;
maps are (2, 3) affine matrices ``[A | t]`` acting on column vectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "estimate_similarity",
    "apply_transform",
    "invert_transform",
    "resize_matrix",
    "cosine",
    "as_rgb_uint8",
]


def estimate_similarity(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
  """Least-squares similarity (Umeyama 1991) with ``dst ~ s R src + t``.

  Args:
    src, dst: (K, 2) corresponding points, K >= 2.
    weights: optional (K,) non-negative weights.

  Returns:
    (2, 3) float64 matrix ``[s R | t]`` (proper rotation, no reflection).
  """
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
    raise ValueError(f"need matching (K>=2, 2) point arrays, got {src.shape}, {dst.shape}")
  if not (np.isfinite(src).all() and np.isfinite(dst).all()):
    raise ValueError("landmarks contain NaN/inf")
  w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
  if w.shape != (len(src),) or (w < 0).any() or w.sum() <= 0:
    raise ValueError("weights must be (K,) non-negative with a positive sum")
  w = w / w.sum()
  mu_s = w @ src
  mu_d = w @ dst
  xs = src - mu_s
  xd = dst - mu_d
  var_s = float(w @ (xs**2).sum(1))
  if var_s <= 1e-12:
    raise ValueError("source points are degenerate (all coincide)")
  cov = (xd * w[:, None]).T @ xs  # (2, 2)
  u, d, vt = np.linalg.svd(cov)
  sign = np.eye(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    sign[1, 1] = -1.0
  rot = u @ sign @ vt
  scale = float(np.trace(np.diag(d) @ sign)) / var_s
  t = mu_d - scale * rot @ mu_s
  return np.concatenate([scale * rot, t[:, None]], axis=1)


def apply_transform(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
  """Applies a (2, 3) affine matrix to (..., 2) points."""
  pts = np.asarray(pts, np.float64)
  return pts @ m[:, :2].T + m[:, 2]


def invert_transform(m: np.ndarray) -> np.ndarray:
  """Inverse of a (2, 3) affine matrix."""
  a = np.linalg.inv(m[:, :2])
  return np.concatenate([a, -(a @ m[:, 2])[:, None]], axis=1)


def resize_matrix(size: int, out: int) -> np.ndarray:
  """Output->input map of a square resize ``size`` -> ``out`` (pixel centres aligned)."""
  s = size / out
  return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]], np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise cosine similarity in float64."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  na = np.maximum(np.linalg.norm(a, axis=-1), 1e-12)
  nb = np.maximum(np.linalg.norm(b, axis=-1), 1e-12)
  return np.sum(a * b, axis=-1) / (na * nb)


def identity_scores(gallery_emb, gallery_labels, probe_emb) -> tuple[np.ndarray, np.ndarray]:
  """(identities (C,) sorted ascending, scores (P, C)): each identity's best
  cosine similarity (float64) over its gallery embeddings, for each probe."""
  g = np.asarray(gallery_emb, np.float64)
  p = np.asarray(probe_emb, np.float64)
  for x, name in ((g, "gallery_emb"), (p, "probe_emb")):
    if x.ndim != 2:
      raise ValueError(f"{name} must be (N, D), got shape {x.shape}")
  g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
  p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
  ids, inv = np.unique(np.asarray(gallery_labels).reshape(-1), return_inverse=True)
  sims = p @ g.T  # (P, G)
  scores = np.full((len(p), len(ids)), -np.inf)
  np.maximum.at(scores.T, inv, sims.T)
  return ids, scores


def as_rgb_uint8(image: Any, name: str) -> np.ndarray:
  """A uint8 image array as (H, W, 3) RGB: gray (H, W) / (H, W, 1) repeated, alpha dropped.

  Raises:
    ValueError: naming ``name``, for another dtype or shape.
  """
  img = np.asarray(image)
  if img.dtype != np.uint8:
    raise ValueError(
        f"{name}: image arrays must be uint8 (H, W, 3), got {img.dtype} " f"{img.shape}"
    )
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=-1)
  elif img.ndim == 3 and img.shape[2] == 1:
    img = np.repeat(img, 3, axis=-1)
  elif img.ndim == 3 and img.shape[2] == 4:
    img = img[..., :3]
  if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
    raise ValueError(f"{name}: image must be (H, W, 3) RGB, got shape {np.shape(image)}")
  return img


def aligned_faces(faces: Any, resolution: int, hint: str) -> np.ndarray:
  """``faces`` as float32 (N, R, R, 3) aligned faces (a single (R, R, 3) face
  gains the batch axis); any other shape raises naming it, with ``hint``."""
  x = np.asarray(faces, np.float32)
  r = resolution
  if x.ndim == 3:
    x = x[None]
  if x.ndim != 4 or x.shape[1:] != (r, r, 3):
    raise ValueError(
        f"aligned faces must be (N, {r}, {r}, 3) float32 in [-1, 1], got {np.shape(faces)}; " + hint
    )
  return x
