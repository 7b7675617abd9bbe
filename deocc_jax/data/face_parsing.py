"""Face-parsing labels rasterised from five landmarks (for GFC's semantic parsing loss).

GFC (Li et al., CVPR 2017, Sec. 3.2) regularises its generator with a frozen
face-parsing network trained on Helen (11 classes). No face-parsing data set
is available here, so the targets are a documented approximation built from
what every face record carries: the five landmarks (CelebA order: left eye,
right eye, nose tip, left / right mouth corner) and, when present, the
record's ``face_region``. Five classes (:data:`CLASSES`):

* 0 background;
* 1 face skin: ``face_region > 0.5`` when a region is given (the synthetic
  faces' skin area), else the landmark ellipse of
  :func:`deocc_jax.data.masks.face_region_from_landmarks` (real photos);
* 2 eyes, 3 nose, 4 mouth: ellipses in the *landmark frame* (origin between
  the eyes, ``u`` along the eye line, ``v`` perpendicular pointing to the
  mouth, unit = inter-ocular distance ``d``), so they follow the face's pose:

  - each eye: centre the eye landmark, semi-axes ``EYE_AXES`` = (0.22, 0.11) d;
  - nose: centre the nose tip moved ``NOSE_RISE`` = 0.2 d towards the eyes,
    semi-axes ``NOSE_AXES`` = (0.2, 0.3) d (bridge above the tip, nostrils);
  - mouth: centre the corners' midpoint, semi-axis along ``u`` half the corner
    distance + ``MOUTH_PAD`` = 0.08 d, along ``v`` ``MOUTH_HALF_HEIGHT`` = 0.16 d.

  The sizes match the synthetic faces' proportions (``synthetic_faces.py``:
  eye half-width 0.095 / inter-ocular 0.44 = 0.22 d, eye half-height 0.10 d,
  nose length 0.45 d, lips up to 0.1 d half-height when open) and average
  human ones. Parts are painted in the order skin, nose, mouth, eyes (a later
  one wins an overlap); a part may extend past the skin region.

Pixel ``(i, j)`` has centre ``(x, y) = (j, i)``, the landmarks' convention.
The ``v`` axis is oriented towards the mouth corners, so the labels do not
depend on which eye is listed first. :func:`parsing_labels` is numpy float64
(host pipelines, the reference); :func:`parsing_labels_jax` is the same
geometry in ``jax.numpy`` (float32, jit-able, batched) for building targets
on device from a batch's ``landmarks``; boundary pixels may differ by rounding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deocc_jax.data.masks import face_region_from_landmarks

CLASSES = ("background", "skin", "eyes", "nose", "mouth")
NUM_CLASSES = len(CLASSES)
BACKGROUND, SKIN, EYES, NOSE, MOUTH = range(NUM_CLASSES)

EYE_AXES = (0.22, 0.11)
NOSE_RISE = 0.2
NOSE_AXES = (0.2, 0.3)
MOUTH_PAD = 0.08
MOUTH_HALF_HEIGHT = 0.16


def _check_landmarks(lm: Any, batched: bool) -> None:
  want = "(B, 5, 2)" if batched else "(5, 2)"
  if lm.shape[-2:] != (5, 2) or lm.ndim != (3 if batched else 2):
    raise ValueError(f"landmarks must have shape {want}, got {tuple(lm.shape)}")


def _part_ellipses(xp: Any, lm: Any) -> tuple[Any, Any, list[tuple[int, Any, Any, Any, Any]]]:
  """Frame and ellipses of one face (or a batch: leading axes broadcast).

  Returns ``(ex, ey, parts)``: unit vectors along the eye line and towards the
  mouth (each ``(..., 2)``) and ``[(class, centre (..., 2), semi_u, semi_v)]``
  with semi-axes in pixels (``(...)``), in painting order.
  """
  le, re_, nose, ml, mr = (lm[..., k, :] for k in range(5))
  eye_vec = re_ - le
  d = xp.sqrt(xp.sum(eye_vec * eye_vec, axis=-1))
  ex = eye_vec / d[..., None]
  ey = xp.stack([-ex[..., 1], ex[..., 0]], axis=-1)
  centre = (le + re_) / 2
  mouth = (ml + mr) / 2
  # orient v towards the mouth: independent of the eye order
  sign = xp.where(xp.sum((mouth - centre) * ey, axis=-1) < 0, -1.0, 1.0)
  ey = ey * sign[..., None]
  half_mouth = xp.sqrt(xp.sum((mr - ml) ** 2, axis=-1)) / 2
  parts = [
      (NOSE, nose - NOSE_RISE * d[..., None] * ey, NOSE_AXES[0] * d, NOSE_AXES[1] * d),
      (MOUTH, mouth, half_mouth + MOUTH_PAD * d, MOUTH_HALF_HEIGHT * d),
      (EYES, le, EYE_AXES[0] * d, EYE_AXES[1] * d),
      (EYES, re_, EYE_AXES[0] * d, EYE_AXES[1] * d),
  ]
  return ex, ey, parts


def parsing_labels(
    landmarks: np.ndarray, height: int, width: int, face_region: np.ndarray | None = None
) -> np.ndarray:
  """(H, W) int32 parsing labels of one face (classes :data:`CLASSES`).

  Args:
    landmarks: (5, 2) pixel landmarks (x, y), CelebA order.
    height, width: image size.
    face_region: optional (H, W) skin area in [0, 1] (a record's
      ``face_region``); without it the landmark ellipse is used.
  """
  lm = np.asarray(landmarks, np.float64)
  _check_landmarks(lm, batched=False)
  if np.hypot(*(lm[1] - lm[0])) < 1e-3:
    raise ValueError(f"degenerate landmarks: eyes coincide at {lm[0]}")
  if face_region is None:
    face_region = face_region_from_landmarks(lm, height, width)
  face_region = np.asarray(face_region)
  if face_region.shape != (height, width):
    raise ValueError(f"face_region must have shape {(height, width)}, got {face_region.shape}")
  labels = np.where(face_region > 0.5, SKIN, BACKGROUND).astype(np.int32)
  gy, gx = np.mgrid[0:height, 0:width].astype(np.float64)
  ex, ey, parts = _part_ellipses(np, lm)
  for cls, c, ru, rv in parts:
    dx, dy = gx - c[0], gy - c[1]
    u = (dx * ex[0] + dy * ex[1]) / ru
    v = (dx * ey[0] + dy * ey[1]) / rv
    labels[u * u + v * v <= 1.0] = cls
  return labels


def parsing_labels_batch(
    landmarks: np.ndarray, height: int, width: int, face_regions: np.ndarray | None = None
) -> np.ndarray:
  """(B, H, W) int32 labels of a batch: :func:`parsing_labels` per face."""
  lm = np.asarray(landmarks)
  _check_landmarks(lm, batched=True)
  if face_regions is not None and np.shape(face_regions) != (lm.shape[0], height, width):
    raise ValueError(
        f"face_regions must have shape {(lm.shape[0], height, width)}, "
        f"got {np.shape(face_regions)}"
    )
  return np.stack(
      [
          parsing_labels(lm[b], height, width, None if face_regions is None else face_regions[b])
          for b in range(lm.shape[0])
      ]
  )


def parsing_labels_jax(
    landmarks: jax.Array, height: int, width: int, face_regions: jax.Array | None = None
) -> jax.Array:
  """(B, H, W) int32 labels from (B, 5, 2) landmarks, in ``jax.numpy`` (jit-able).

  Same geometry as :func:`parsing_labels` in float32. Without ``face_regions``
  the skin is the ellipse of ``face_region_from_landmarks`` (``u / 1.15``,
  ``(v - 0.55) / 1.45`` in the landmark frame), written here in jnp.
  Degenerate landmarks (coinciding eyes) give non-finite frames and
  background-only labels; the numpy version raises instead.
  """
  _check_landmarks(landmarks, batched=True)
  lm = jnp.asarray(landmarks, jnp.float32)
  b = lm.shape[0]
  gy, gx = jnp.meshgrid(
      jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
  )
  ex, ey, parts = _part_ellipses(jnp, lm)

  def frame(c: jax.Array) -> tuple[jax.Array, jax.Array]:
    dx = gx[None] - c[:, 0, None, None]
    dy = gy[None] - c[:, 1, None, None]
    u = dx * ex[:, 0, None, None] + dy * ex[:, 1, None, None]
    v = dx * ey[:, 0, None, None] + dy * ey[:, 1, None, None]
    return u, v

  if face_regions is None:
    d = jnp.sqrt(jnp.sum((lm[:, 1] - lm[:, 0]) ** 2, axis=-1))[:, None, None]
    # masks.face_region_from_landmarks: v from the eye line's normal (not the
    # mouth-oriented one); identical for CelebA-ordered landmarks.
    ex0 = (lm[:, 1] - lm[:, 0]) / d[:, :, 0]
    dx = gx[None] - ((lm[:, 0, 0] + lm[:, 1, 0]) / 2)[:, None, None]
    dy = gy[None] - ((lm[:, 0, 1] + lm[:, 1, 1]) / 2)[:, None, None]
    u = (dx * ex0[:, 0, None, None] + dy * ex0[:, 1, None, None]) / d
    v = (-dx * ex0[:, 1, None, None] + dy * ex0[:, 0, None, None]) / d
    skin = (u / 1.15) ** 2 + ((v - 0.55) / 1.45) ** 2 <= 1.0
  else:
    if face_regions.shape != (b, height, width):
      raise ValueError(
          f"face_regions must have shape {(b, height, width)}, got {face_regions.shape}"
      )
    skin = face_regions > 0.5
  labels = jnp.where(skin, SKIN, BACKGROUND).astype(jnp.int32)
  for cls, c, ru, rv in parts:
    u, v = frame(c)
    u = u / ru[:, None, None]
    v = v / rv[:, None, None]
    labels = jnp.where(u * u + v * v <= 1.0, cls, labels)
  return labels


def class_fractions(labels: np.ndarray) -> np.ndarray:
  """(NUM_CLASSES,) fraction of pixels per class (class balance diagnostics)."""
  counts = np.bincount(np.asarray(labels).ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
  return counts / max(int(np.asarray(labels).size), 1)
