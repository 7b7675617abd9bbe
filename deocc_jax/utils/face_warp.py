"""The one face warp of inference, serving and export (numpy + Pillow only).

``deocc_jax.inference.FaceRecognizer`` (``infer``), ``deocc_jax.serving`` (the
exported model) and the HTTP server built on it all align a face with
:func:`warp_face` and its mask with :func:`warp_mask`, so one image gives the
same aligned crop, bit for bit, in every path. The warp is Pillow's AFFINE
bilinear transform on 32-bit float channels (mode 'F': no 8-bit rounding),
antialiased when it shrinks by more than 2x (an ``Image.reduce`` box
pre-filter first, so the bilinear step shrinks by less than 2x).

The input checks every path shares are here too: :func:`check_face_size`
(:data:`MIN_EYE_DISTANCE` = 8 pixels between the eye centres, a face about
20 px wide; less for models under 54 px: :func:`min_eye_distance`) and :func:`check_aligned_crop` (an image given as an aligned crop
is square, at least the model's input size and not blank).

Maps are (2, 3) matrices from crop pixels to image pixels, pixel centres at
integer coordinates (``deocc_jax.utils.face_geometry``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from deocc_jax.utils.face_geometry import apply_transform

__all__ = [
    "MIN_EYE_DISTANCE",
    "warp_affine_pil",
    "warp_face",
    "warp_mask",
    "eye_distance",
    "min_eye_distance",
    "check_face_size",
    "check_aligned_crop",
]

# Smallest face inference accepts: pixels between the two eye centres of the
# 5 landmarks (a face about 2.5x as wide, ~20 px: MTCNN's usual minimum).
MIN_EYE_DISTANCE = 8.0


def _pil_warp_channel(img: Any, m: np.ndarray, size: tuple[int, int], fill: Any) -> Any:
  """PIL AFFINE bilinear warp with this module's pixel convention: PIL maps the
  output pixel centre (x + 0.5, y + 0.5) to input coordinates whose pixel j
  has its centre at j + 0.5, hence ``c = t + 0.5 - A @ (0.5, 0.5)``."""
  from PIL import Image

  a = m[:, :2]
  c = m[:, 2] + 0.5 - a @ np.array([0.5, 0.5])
  data = (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1])
  return img.transform(
      size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=fill
  )


def warp_affine_pil(
    image: np.ndarray,
    m: np.ndarray,
    out_size: tuple[int, int],
    border_value: float = 0.0,
    antialias: bool = True,
) -> np.ndarray:
  """Bilinear warp: output pixel (x, y) takes the input at ``m @ [x, y, 1]``.

  When the map shrinks by ``s = sqrt|det A| > 2`` and ``antialias``, the sampled
  region is first box-averaged by ``k = floor(s)`` (``Image.reduce``), so the
  bilinear step shrinks by ``s / k`` in [1, 2). Channels are warped one by one
  as 32-bit float images.

  Args:
    image: (H, W) or (H, W, C) array.
    m: (2, 3) map from output pixel coordinates to input coordinates.
    out_size: (height, width) of the output.
    border_value: value outside the input image.
    antialias: box pre-filter for strong down-scaling.

  Returns:
    float32 array (out_h, out_w[, C]).
  """
  from PIL import Image

  img = np.asarray(image)
  if img.ndim not in (2, 3):
    raise ValueError(f"image must be (H, W) or (H, W, C), got {img.shape}")
  m = np.asarray(m, np.float64)
  if m.shape != (2, 3):
    raise ValueError(f"transform must be (2, 3), got {m.shape}")
  oh, ow = int(out_size[0]), int(out_size[1])
  h, w = img.shape[:2]
  scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
  k = int(scale) if (antialias and scale > 2.0) else 1
  # Only the sampled region (plus a margin) is handed to PIL: copying a whole
  # photo into a PIL image costs more than the warp itself.
  corners = apply_transform(
      m, np.array([[0, 0], [ow - 1, 0], [0, oh - 1], [ow - 1, oh - 1]], np.float64)
  )
  margin = 2.0 * k + 2.0
  x0 = int(min(max(math.floor(corners[:, 0].min() - margin), 0), w - 1))
  y0 = int(min(max(math.floor(corners[:, 1].min() - margin), 0), h - 1))
  x1 = int(max(min(math.ceil(corners[:, 0].max() + margin), w), x0 + 1))
  y1 = int(max(min(math.ceil(corners[:, 1].max() + margin), h), y0 + 1))
  img = np.ascontiguousarray(img[y0:y1, x0:x1])
  m = m.copy()
  m[:, 2] -= (x0, y0)
  if k > 1:
    # reduced pixel v covers input pixels [k v, k v + k): centre k v + (k - 1) / 2
    m = np.concatenate([m[:, :2] / k, ((m[:, 2] - (k - 1) / 2.0) / k)[:, None]], 1)
  chans = img[..., None] if img.ndim == 2 else img
  outs = []
  for ch in range(chans.shape[2]):
    pil = Image.fromarray(np.ascontiguousarray(chans[..., ch], np.float32))  # mode F
    if k > 1:
      pil = pil.reduce(k)
    outs.append(np.asarray(_pil_warp_channel(pil, m, (ow, oh), float(border_value)), np.float32))
  out = np.stack(outs, axis=-1)
  return out[..., 0] if img.ndim == 2 else out


def warp_face(image: np.ndarray, m: np.ndarray, resolution: int) -> np.ndarray:
  """(R, R, 3) float32 face in [-1, 1] (``u8 * 2/255 - 1``) of a uint8 (H, W, 3)
  image under the crop -> image map ``m``."""
  r = int(resolution)
  face = warp_affine_pil(image, m, (r, r), antialias=True)
  return (face * np.float32(2.0 / 255.0) - np.float32(1.0)).astype(np.float32)


def warp_mask(binary: np.ndarray, m: np.ndarray, resolution: int) -> np.ndarray:
  """(R, R, 1) float32 {0, 1} aligned mask of an (H, W) {0, 1} mask: warped
  like the face (bilinear, antialiased), then > 0.5."""
  r = int(resolution)
  b = (np.asarray(binary) > 0.5).astype(np.float32)
  warped = warp_affine_pil(b, m, (r, r), antialias=True)
  return (warped > 0.5).astype(np.float32)[..., None]


def eye_distance(landmarks: np.ndarray) -> float:
  """Pixels between the eye centres of (5, 2) landmarks (CelebA order)."""
  lm = np.asarray(landmarks, np.float64)
  return float(np.hypot(*(lm[1] - lm[0])))


def min_eye_distance(resolution: int) -> float:
  """The smallest face a model of input size R accepts, in pixels between the
  eye centres: :data:`MIN_EYE_DISTANCE` (8), or ``0.15 R`` for models under
  54 px (their own training crops have eyes ~0.2 R apart: 4.8 px at R = 32)."""
  return min(MIN_EYE_DISTANCE, 0.15 * int(resolution))


def check_face_size(landmarks: np.ndarray, name: str, resolution: int) -> None:
  """Raises ``ValueError`` naming ``name`` when the face of these (5, 2)
  landmarks is smaller than :func:`min_eye_distance` allows."""
  d = eye_distance(landmarks)
  lo = min_eye_distance(resolution)
  if not d >= lo:
    raise ValueError(
        f"{name}: the face is too small: {d:.1f} px between the eye centres, the "
        f"minimum is {lo:g} px (a face about {2.5 * lo:.0f} px wide); use a larger "
        f"image of the face"
    )


def check_aligned_crop(image: np.ndarray, resolution: int, name: str, ways_out: str) -> None:
  """An image used as an aligned face crop must be square, at least R x R and
  not blank (one colour: no face); ``ValueError`` naming ``name`` and
  ``ways_out`` (the other ways to give a face) otherwise."""
  h, w = image.shape[:2]
  r = int(resolution)
  if h != w:
    raise ValueError(
        f"{name} is {w}x{h}, not square: an image without landmarks must be an "
        f"aligned square face crop; {ways_out}"
    )
  if h < r:
    raise ValueError(
        f"{name} is {w}x{h}, smaller than the model's {r}x{r} input: an aligned "
        f"face crop must be at least {r}x{r} pixels; {ways_out}"
    )
  flat = np.asarray(image).reshape(-1, image.shape[-1] if image.ndim == 3 else 1)
  if not np.any(flat.max(axis=0) != flat.min(axis=0)):
    raise ValueError(f"{name} is blank (every pixel {flat[0].tolist()}): no face in it")
