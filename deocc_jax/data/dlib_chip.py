"""dlib's 5-point landmarks and face chips, emulated in numpy.

dlib's 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``) uses a
different set of points than ``alignment.CANONICAL_ORDER`` (``DLIB5_ORDER``):
0 image-right eye outer corner, 1 image-right eye inner corner, 2 image-left
eye outer corner, 3 image-left eye inner corner, 4 base of the nose; it has
*no* mouth points. ``dlib5_to_canonical`` converts: eye centres = corner
midpoints; nose tip and mouth corners are estimated from dlib's own mean face
shape (the 68-point mean shape in ``dlib/image_transforms/interpolation.h``,
same normalised frame as the 5-point template) mapped through the
least-squares similarity from the 5-point mean template to the observed points
(the nose tip keeps the observed nose-base position plus the mean-face offset).

dlib's chips (``get_face_chip(size, padding)``): the template is
``dlib_chip_template`` (``(padding + p) / (1 + 2 padding) * size``); the fitted
similarity only fixes the chip centre, rotation and scale ``s``; dlib then maps
chip pixels 0 and ``size - 1`` to the edges of a ``centered_drect`` of width
``size * s`` (``dlib_chip_matrix``). ``extract_dlib_chip`` re-implements
dlib's ``extract_image_chip`` (its 2x pyramid, crop and truncating bilinear
sampling) and reproduces ``dlib.get_face_chip`` bit for bit on the test photos.
"""

from __future__ import annotations

import math

import numpy as np

from deocc_jax.utils.face_geometry import apply_transform, estimate_similarity

__all__ = [
    "DLIB5_ORDER",
    "dlib_chip_template",
    "dlib_chip_matrix",
    "dlib5_to_canonical",
    "extract_dlib_chip",
]

DLIB5_ORDER = (
    "right_eye_outer",
    "right_eye_inner",
    "left_eye_outer",
    "left_eye_inner",
    "nose_base",
)

# dlib's 5-point mean template (interpolation.h, get_face_chip_details), unit square.
_DLIB5_UNIT = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
# Points of dlib's 68-point mean face (same frame): 30 nose tip, 33 nose base,
# 48 / 54 mouth corners.
_DLIB68_NOSE_TIP = np.array([0.490127, 0.515625])
_DLIB68_NOSE_BASE = np.array([0.490127, 0.628106])
_DLIB68_MOUTH = np.array([[0.254149, 0.780233], [0.726104, 0.780233]])


# ---------------------------------------------------------------------------
# Templates and landmarks
# ---------------------------------------------------------------------------
def dlib_chip_template(size: int = 150, padding: float = 0.25) -> np.ndarray:
  """dlib's 5-point template (``DLIB5_ORDER``) for ``get_face_chip(size, padding)``."""
  if size < 2 or padding < 0:
    raise ValueError(f"need size >= 2 and padding >= 0, got {size}, {padding}")
  return (padding + _DLIB5_UNIT) / (1 + 2 * padding) * size


def dlib_chip_matrix(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Chip->image map dlib actually samples with, given the fitted similarity ``m``.

  dlib (``chip_details`` + ``extract_image_chips``) keeps the centre
  ``m @ (cols/2, rows/2)``, rotation and
  scale ``s`` of ``m``, builds ``centered_drect(centre, cols*s, rows*s)`` (which
  spans ``cols*s - 1`` pixels) and maps chip pixels (0, 0), (cols-1, 0),
  (0, rows-1) to its rotated corners.
  """
  rows, cols = int(size[0]), int(size[1])
  lin = np.asarray(m, np.float64)[:, :2]
  s = math.sqrt(abs(np.linalg.det(lin)))
  rot = lin / s
  centre = apply_transform(m, np.array([cols / 2.0, rows / 2.0]))
  kx = (cols * s - 1.0) / (cols - 1)
  ky = (rows * s - 1.0) / (rows - 1)
  a = rot @ np.diag([kx, ky])
  t = centre - a @ np.array([(cols - 1) / 2.0, (rows - 1) / 2.0])
  return np.concatenate([a, t[:, None]], axis=1)


def dlib5_to_canonical(points: np.ndarray) -> np.ndarray:
  """Converts dlib 5-point predictor output (..., 5, 2) to ``CANONICAL_ORDER``.

  Eye centres are the midpoints of the eye corners; nose tip and mouth corners
  are estimated from dlib's mean face (see module docstring).
  """
  pts = np.asarray(points, np.float64)
  if pts.shape[-2:] != (5, 2):
    raise ValueError(f"dlib 5-point landmarks must be (..., 5, 2), got {pts.shape}")
  flat = pts.reshape(-1, 5, 2)
  out = np.empty_like(flat)
  for i, p in enumerate(flat):
    m = estimate_similarity(_DLIB5_UNIT, p)
    lin = m[:, :2]
    out[i, 0] = 0.5 * (p[2] + p[3])
    out[i, 1] = 0.5 * (p[0] + p[1])
    out[i, 2] = p[4] + lin @ (_DLIB68_NOSE_TIP - _DLIB68_NOSE_BASE)
    out[i, 3:5] = apply_transform(m, _DLIB68_MOUTH)
  return out.reshape(pts.shape)


# ---------------------------------------------------------------------------
# Exact emulation of dlib's chip extraction (extract_image_chips)
# ---------------------------------------------------------------------------
def _dlib_point_down(p: np.ndarray) -> np.ndarray:
  # pyramid_down<2>::point_down
  return p / 2.0 - np.array([1.25, 0.75])


def _drect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
  l, t, r, b = rect
  (l, t), (r, b) = _dlib_point_down(np.array([l, t])), _dlib_point_down(np.array([r, b]))
  return (l, t, r, b)


def _drect_area(rect: tuple[float, float, float, float]) -> float:
  l, t, r, b = rect
  if l > r or t > b:
    return 0.0
  return (r - l + 1.0) * (b - t + 1.0)


def _dlib_pyr_down(img: np.ndarray) -> np.ndarray:
  """dlib ``pyramid_down<2>`` on an (H, W, C) uint8 image (integer arithmetic)."""
  o = img.astype(np.int64)
  nr, nc = o.shape[:2]
  if nr <= 8 or nc <= 8:
    return np.zeros((0, 0) + o.shape[2:], np.uint8)
  n_c = (nc - 3) // 2
  n_r = (nr - 3) // 2
  k = (1, 4, 6, 4, 1)
  t = sum(k[j] * o[:, j : j + 2 * n_c : 2] for j in range(5))
  d = sum(k[j] * t[j : j + 2 * n_r : 2] for j in range(5))
  return (d // 256).astype(np.uint8)


def _dlib_bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """dlib ``interpolate_bilinear`` + ``transform_image``: 0 unless all 4 taps inside."""
  h, w = img.shape[:2]
  left = np.floor(x).astype(np.int64)
  top = np.floor(y).astype(np.int64)
  ok = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
  l = np.clip(left, 0, max(w - 2, 0))
  t = np.clip(top, 0, max(h - 2, 0))
  fx = (x - left)[..., None]
  fy = (y - top)[..., None]
  f = img.astype(np.float64)
  val = (1 - fy) * ((1 - fx) * f[t, l] + fx * f[t, l + 1]) + fy * (
      (1 - fx) * f[t + 1, l] + fx * f[t + 1, l + 1]
  )
  val = np.where(ok[..., None], val, 0.0)
  return np.clip(np.trunc(val), 0, 255).astype(np.uint8)


def _rotate(centre: np.ndarray, p: np.ndarray, angle: float) -> np.ndarray:
  c, s = math.cos(angle), math.sin(angle)
  d = np.asarray(p, np.float64) - centre
  return centre + np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])


def extract_dlib_chip(image: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Re-implementation of dlib's ``extract_image_chip`` for a similarity chip.

  Args:
    image: (H, W, 3) uint8 RGB.
    m: the (2, 3) least-squares similarity from template to image points (as
      fitted by ``chip_details``), *before* ``dlib_chip_matrix``.
    size: (rows, cols) of the chip.

  Reproduces dlib's chip rectangle, its 2x pyramid (binomial 5x5 filter, integer
  arithmetic, ``point_down(p) = p / 2 - (1.25, 0.75)``), the crop of the source,
  and bilinear sampling with truncation to uint8. (dlib's fast path for an
  un-rotated chip of exactly the rectangle's size is not reproduced.)
  """
  img = np.asarray(image)
  if img.dtype != np.uint8 or img.ndim != 3:
    raise ValueError(
        f"extract_dlib_chip needs an (H, W, C) uint8 image, got {img.dtype} " f"{img.shape}"
    )
  rows, cols = int(size[0]), int(size[1])
  m = np.asarray(m, np.float64)
  lin = m[:, :2]
  p = lin @ np.array([1.0, 0.0])
  angle = math.atan2(p[1], p[0])
  scale = float(np.hypot(p[0], p[1]))
  centre = apply_transform(m, np.array([cols / 2.0, rows / 2.0]))
  w, h = cols * scale - 1.0, rows * scale - 1.0  # centered_drect
  rect = (centre[0] - w / 2, centre[1] - h / 2, centre[0] + w / 2, centre[1] + h / 2)
  chip_area = rows * cols
  # pyramid depth and source bounding box
  depth, grow = 0, 2.0
  r2 = _drect_down(rect)
  while _drect_area(r2) > chip_area:
    r2 = _drect_down(r2)
    depth += 1
    grow = grow * 2 + 2
  rc = np.array([(rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2])
  corners = np.array(
      [
          _rotate(rc, q, angle)
          for q in ([rect[0], rect[1]], [rect[2], rect[1]], [rect[0], rect[3]], [rect[2], rect[3]])
      ]
  )
  hh, ww = img.shape[:2]
  gl = max(corners[:, 0].min() - grow, 0.0)
  gt = max(corners[:, 1].min() - grow, 0.0)
  gr = min(corners[:, 0].max() + grow, ww - 1.0)
  gb = min(corners[:, 1].max() + grow, hh - 1.0)
  bl, bt = int(math.floor(gl + 0.5)), int(math.floor(gt + 0.5))
  br, bb = int(math.floor(gr + 0.5)), int(math.floor(gb + 0.5))
  if br < bl or bb < bt:
    return np.zeros((rows, cols) + img.shape[2:], np.uint8)
  src = img[bt : bb + 1, bl : br + 1]
  levels = []
  for i in range(depth):
    levels.append(_dlib_pyr_down(src if i == 0 else levels[-1]))
  # chip rectangle in the chosen level
  level = -1
  r3 = (rect[0] - bl, rect[1] - bt, rect[2] - bl, rect[3] - bt)
  while _drect_area(_drect_down(r3)) > chip_area:
    level += 1
    r3 = _drect_down(r3)
  c3 = np.array([(r3[0] + r3[2]) / 2, (r3[1] + r3[3]) / 2])
  to = np.array(
      [_rotate(c3, np.array(q), angle) for q in ([r3[0], r3[1]], [r3[2], r3[1]], [r3[0], r3[3]])]
  )
  # affine map from chip (0,0), (cols-1,0), (0,rows-1) to those corners
  a = np.stack([(to[1] - to[0]) / (cols - 1), (to[2] - to[0]) / (rows - 1)], axis=1)
  ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
  sx = a[0, 0] * xs + a[0, 1] * ys + to[0, 0]
  sy = a[1, 0] * xs + a[1, 1] * ys + to[0, 1]
  source = src if level == -1 else levels[level]
  if source.size == 0:
    return np.zeros((rows, cols) + img.shape[2:], np.uint8)
  return _dlib_bilinear(source, sx, sy)
