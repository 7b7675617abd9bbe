"""MTCNN (Zhang et al. 2016) in Flax: P-Net, R-Net, O-Net and the cascade.

A port of facenet-pytorch 2.6.0's MTCNN, run on the weights its wheel ships
(read without torch: ``deocc_jax.conversion.mtcnn_weights``). The cascade
follows ``facenet_pytorch.models.utils.detect_face`` step for step, including
its conventions, so detections match ``facenet_pytorch.MTCNN.detect``:

1. image pyramid: scales ``12 / min_face_size * factor^k`` while the short
   side stays >= 12 px; each level resized to ``(int(h s + 1), int(w s + 1))``
   by area averaging (PyTorch ``interpolate(mode='area')`` =
   adaptive average pooling, separable), normalised ``(x - 127.5) / 128``;
2. P-Net on every level; cells with face probability >= threshold 0 become
   12x12 boxes mapped back to the image (``floor((2 c + 1) / s)``,
   ``floor((2 c + 12) / s)``); NMS (IoU 0.5) per level, then NMS (0.7) over
   all levels; box regression with the box width ``x2 - x1``; squared;
3. R-Net on 24x24 area-resized crops (1-based ``pad`` clipping of the
   original): threshold 1, NMS 0.7, regression with ``x2 - x1 + 1``, squared;
4. O-Net on 48x48 crops: threshold 2, five landmarks
   (``w * p + x1 - 1``), regression, NMS 0.7 with the intersection over the
   *smaller* box ("Min").

Landmarks are in CelebA order (``alignment.CANONICAL_ORDER``: image-left
eye, image-right eye, nose, image-left / right mouth corner), (x, y) pixels.
The networks are jitted; P-Net compiles once per padded level size
(:func:`padded_size`: multiples of 32 up to 128, then ~25% steps, shared by
every image size), R-Net / O-Net once per batch bucket (powers of two).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "PNet",
    "RNet",
    "ONet",
    "MTCNN",
    "Detections",
    "area_resize_matrix",
    "nms",
    "padded_size",
    "detect_landmarks_mtcnn",
    "default_detector",
]


class PReLU(nn.Module):
  """Parametric ReLU with one slope per channel (PyTorch ``nn.PReLU(C)``)."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param("alpha", nn.initializers.constant(0.25), (self.features,))
    return jnp.where(x >= 0, x, alpha * x)


def _max_pool_ceil(x: jax.Array, k: int, s: int) -> jax.Array:
  """PyTorch ``MaxPool2d(k, s, ceil_mode=True)`` on NHWC (padding with -inf)."""

  def pad(n: int) -> int:
    out = -(-(n - k) // s) + 1
    if (out - 1) * s >= n:
      out -= 1
    return max((out - 1) * s + k - n, 0)

  return nn.max_pool(x, (k, k), (s, s), padding=((0, pad(x.shape[1])), (0, pad(x.shape[2]))))


def _conv(features: int, k: int, name: str) -> nn.Conv:
  return nn.Conv(features, (k, k), padding="VALID", name=name)


def _flatten_whc(x: jax.Array) -> jax.Array:
  """NHWC -> (N, W*H*C) in PyTorch's ``permute(0, 3, 2, 1)`` order."""
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


def _pool_out(n: int, k: int, s: int) -> int:
  out = -(-(n - k) // s) + 1
  return out - 1 if (out - 1) * s >= n else out


def pnet_output_size(h: int, w: int) -> tuple[int, int]:
  """P-Net's output map size for an (h, w) input."""
  return _pool_out(h - 2, 2, 2) - 4, _pool_out(w - 2, 2, 2) - 4


class PNet(nn.Module):
  """Proposal network: (N, H, W, 3) -> (regression (N, H', W', 4), prob (N, H', W', 2)).

  ``valid = (h, w)``: the input is an (h, w) image zero-padded at the bottom /
  right to (H, W) (so one compiled shape serves many pyramid levels); the
  padded conv1 outputs are excluded from the ceil-mode pooling, so the
  outputs ``[:h', :w']`` (:func:`pnet_output_size`) equal P-Net on the
  unpadded image.
  """

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    x = PReLU(10, name="prelu1")(_conv(10, 3, "conv1")(x))
    if valid is not None:
      rows = jnp.arange(x.shape[1])[:, None] < valid[0] - 2
      cols = jnp.arange(x.shape[2])[None, :] < valid[1] - 2
      x = jnp.where((rows & cols)[None, :, :, None], x, jnp.float32(-1e30))
    x = _max_pool_ceil(x, 2, 2)
    x = PReLU(16, name="prelu2")(_conv(16, 3, "conv2")(x))
    x = PReLU(32, name="prelu3")(_conv(32, 3, "conv3")(x))
    prob = jax.nn.softmax(_conv(2, 1, "conv4_1")(x), axis=-1)
    return _conv(4, 1, "conv4_2")(x), prob


class RNet(nn.Module):
  """Refinement network: (N, 24, 24, 3) -> (regression (N, 4), prob (N, 2))."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    chex.assert_shape(x, (None, 24, 24, 3))
    x = _max_pool_ceil(PReLU(28, name="prelu1")(_conv(28, 3, "conv1")(x)), 3, 2)
    x = _max_pool_ceil(PReLU(48, name="prelu2")(_conv(48, 3, "conv2")(x)), 3, 2)
    x = PReLU(64, name="prelu3")(_conv(64, 2, "conv3")(x))
    x = PReLU(128, name="prelu4")(nn.Dense(128, name="dense4")(_flatten_whc(x)))
    prob = jax.nn.softmax(nn.Dense(2, name="dense5_1")(x), axis=-1)
    return nn.Dense(4, name="dense5_2")(x), prob


class ONet(nn.Module):
  """Output network: (N, 48, 48, 3) -> (regression (N, 4), landmarks (N, 10), prob (N, 2))."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    chex.assert_shape(x, (None, 48, 48, 3))
    x = _max_pool_ceil(PReLU(32, name="prelu1")(_conv(32, 3, "conv1")(x)), 3, 2)
    x = _max_pool_ceil(PReLU(64, name="prelu2")(_conv(64, 3, "conv2")(x)), 3, 2)
    x = _max_pool_ceil(PReLU(64, name="prelu3")(_conv(64, 3, "conv3")(x)), 2, 2)
    x = PReLU(128, name="prelu4")(_conv(128, 2, "conv4")(x))
    x = PReLU(256, name="prelu5")(nn.Dense(256, name="dense5")(_flatten_whc(x)))
    prob = jax.nn.softmax(nn.Dense(2, name="dense6_1")(x), axis=-1)
    return nn.Dense(4, name="dense6_2")(x), nn.Dense(10, name="dense6_3")(x), prob


# ------------------------------------------------------------------ helpers


def area_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) averaging matrix of adaptive average pooling along one axis."""
  a = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    s = (i * n_in) // n_out
    e = -(-((i + 1) * n_in) // n_out)
    a[i, s:e] = 1.0 / (e - s)
  return a


def _area_pool_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
  """Adaptive average pooling along ``axis`` (bins ``[floor(i n / m), ceil((i + 1) n / m))``)
  from cumulative sums in float64."""
  n_in = x.shape[axis]
  i = np.arange(n_out)
  s = (i * n_in) // n_out
  e = -(-((i + 1) * n_in) // n_out)
  cs = np.cumsum(x, axis=axis, dtype=np.float64)
  zero = np.zeros_like(np.take(cs, [0], axis=axis))
  cs = np.concatenate([zero, cs], axis=axis)
  shape = [1] * x.ndim
  shape[axis] = n_out
  return (np.take(cs, e, axis=axis) - np.take(cs, s, axis=axis)) / (e - s).reshape(shape)


def _area_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
  """PyTorch ``interpolate(mode='area')`` of (H, W, C) float32 to (h, w, C)."""
  return _area_pool_axis(_area_pool_axis(img, h, 0), w, 1).astype(np.float32)


def nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union"
) -> np.ndarray:
  """Greedy NMS; indices kept, best score first.

  ``'union'``: IoU with areas ``(x2 - x1) (y2 - y1)`` (torchvision's
  ``nms``, suppress IoU > threshold); ``'min'``: intersection over the
  smaller box with areas ``(x2 - x1 + 1) (y2 - y1 + 1)`` (MTCNN's last stage).
  """
  if len(boxes) == 0:
    return np.zeros((0,), np.int64)
  b = np.asarray(boxes, np.float32)
  x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
  plus = np.float32(1.0 if method == "min" else 0.0)
  area = (x2 - x1 + plus) * (y2 - y1 + plus)
  order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
  keep = []
  while order.size:
    i = order[0]
    keep.append(i)
    rest = order[1:]
    w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + plus)
    h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + plus)
    inter = w * h
    if method == "min":
      o = inter / np.minimum(area[i], area[rest])
    else:
      o = inter / (area[i] + area[rest] - inter)
    order = rest[o <= threshold]
  return np.asarray(keep, np.int64)


def _rerec(b: np.ndarray) -> np.ndarray:
  b = b.copy()
  h = b[:, 3] - b[:, 1]
  w = b[:, 2] - b[:, 0]
  ll = np.maximum(w, h)
  b[:, 0] = b[:, 0] + w * np.float32(0.5) - ll * np.float32(0.5)
  b[:, 1] = b[:, 1] + h * np.float32(0.5) - ll * np.float32(0.5)
  b[:, 2] = b[:, 0] + ll
  b[:, 3] = b[:, 1] + ll
  return b


def _bbreg(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
  b = b.copy()
  w = b[:, 2] - b[:, 0] + np.float32(1)
  h = b[:, 3] - b[:, 1] + np.float32(1)
  b[:, 0] += reg[:, 0] * w
  b[:, 1] += reg[:, 1] * h
  b[:, 2] += reg[:, 2] * w
  b[:, 3] += reg[:, 3] * h
  return b


def _pad(b: np.ndarray, w: int, h: int):
  bi = np.trunc(b[:, :4]).astype(np.int64)
  x, y, ex, ey = bi[:, 0], bi[:, 1], bi[:, 2], bi[:, 3]
  return np.maximum(y, 1), np.minimum(ey, h), np.maximum(x, 1), np.minimum(ex, w)


def padded_size(n: int, bucket: int) -> int:
  """The padded side P-Net runs a pyramid level of side ``n`` at: a multiple of
  ``bucket`` up to ``4 bucket``, then steps of about 25% (rounded up to
  multiples of ``bucket``), so every image size shares a few compiled shapes
  (17 sizes up to 3,000 px for ``bucket`` 32; at most 40% padding)."""
  size = bucket
  while size < n:
    size = size + bucket if size < 4 * bucket else -(-int(size * 1.25) // bucket) * bucket
  return size


def _bucket(n: int) -> int:
  return 1 << max(int(np.ceil(np.log2(max(n, 1)))), 2)


@dataclasses.dataclass(frozen=True)
class Detections:
  """Faces found in one image, best score first."""

  boxes: np.ndarray  # (K, 4) float32 x1, y1, x2, y2
  scores: np.ndarray  # (K,) float32 O-Net face probability
  landmarks: np.ndarray  # (K, 5, 2) float32, CelebA order

  def __len__(self) -> int:
    return len(self.scores)


class MTCNN:
  """The MTCNN cascade with facenet-pytorch's defaults.

  Args:
    params: ``{'pnet': variables, 'rnet': ..., 'onet': ...}``; default: read
      from the installed facenet-pytorch wheel
      (``mtcnn_weights.load_mtcnn_params``).
    min_face_size, thresholds, factor: as ``facenet_pytorch.MTCNN``.
    bucket: P-Net inputs are padded to multiples of this (0: exact shapes,
      one compilation per pyramid level shape).
  """

  def __init__(
      self,
      params: dict[str, Any] | None = None,
      min_face_size: int = 20,
      thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
      factor: float = 0.709,
      bucket: int = 32,
  ):
    if params is None:
      from deocc_jax.conversion.mtcnn_weights import load_mtcnn_params

      params = load_mtcnn_params()
    if min_face_size < 12:
      raise ValueError(f"min_face_size must be >= 12 pixels, got {min_face_size}")
    if not 0 < factor < 1:
      raise ValueError(f"factor must be in (0, 1), got {factor}")
    self.params = jax.tree_util.tree_map(jnp.asarray, params)
    self.min_face_size = int(min_face_size)
    self.thresholds = tuple(float(t) for t in thresholds)
    self.factor = float(factor)
    self.bucket = int(bucket)
    self._pnet = jax.jit(PNet().apply)
    self._pnet_valid = jax.jit(PNet().apply)
    self._rnet = jax.jit(RNet().apply)
    self._onet = jax.jit(ONet().apply)

  # the three networks (numpy in, numpy out)
  def pnet(self, x: np.ndarray, bucket: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """P-Net on (N, h, w, 3); with ``bucket`` > 0 the input is zero-padded to
    :func:`padded_size` (one compilation per padded size; same outputs)."""
    x = np.asarray(x, np.float32)
    if bucket <= 0:
      reg, prob = self._pnet(self.params["pnet"], jnp.asarray(x))
      return np.asarray(reg), np.asarray(prob)
    n, h, w = x.shape[:3]
    hp, wp = padded_size(h, bucket), padded_size(w, bucket)
    xp = np.zeros((n, hp, wp, 3), np.float32)
    xp[:, :h, :w] = x
    reg, prob = self._pnet_valid(self.params["pnet"], jnp.asarray(xp), jnp.array([h, w], jnp.int32))
    oh, ow = pnet_output_size(h, w)
    return np.asarray(reg)[:, :oh, :ow], np.asarray(prob)[:, :oh, :ow]

  def _batched(self, fn, params, x: np.ndarray):
    n = len(x)
    pad = _bucket(n) - n
    xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], np.float32)]) if pad else x
    outs = fn(params, jnp.asarray(xp, jnp.float32))
    return tuple(np.asarray(o)[:n] for o in outs)

  def rnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self._batched(self._rnet, self.params["rnet"], x)

  def onet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return self._batched(self._onet, self.params["onet"], x)

  def _crops(self, img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    y, ey, x, ex = _pad(boxes, w, h)
    out = []
    for k in range(len(boxes)):
      if ey[k] > y[k] - 1 and ex[k] > x[k] - 1:
        out.append(_area_resize(img[y[k] - 1 : ey[k], x[k] - 1 : ex[k]], size, size))
      else:  # a box entirely outside the image: an empty crop scores nothing
        out.append(np.full((size, size, 3), 127.5, np.float32))
    return (np.stack(out) - np.float32(127.5)) * np.float32(0.0078125)

  def detect(self, image: np.ndarray) -> Detections:
    """Faces in one (H, W, 3) RGB uint8 image."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
      raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    imgf = img.astype(np.float32)
    h, w = img.shape[:2]
    empty = Detections(
        np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
    )
    m = 12.0 / self.min_face_size
    minl = min(h, w) * m
    scales, s = [], m
    while minl >= 12:
      scales.append(s)
      s *= self.factor
      minl *= self.factor
    # Stage 1: P-Net over the pyramid (row cumulative sums computed once).
    all_boxes = []
    rows_cs = np.concatenate([np.zeros((1, w, 3)), np.cumsum(imgf, 0, dtype=np.float64)])
    for scale in scales:
      hs, ws = int(h * scale + 1), int(w * scale + 1)
      i = np.arange(hs)
      r0, r1 = (i * h) // hs, -(-((i + 1) * h) // hs)
      rows = (rows_cs[r1] - rows_cs[r0]) / (r1 - r0)[:, None, None]
      level = _area_pool_axis(rows, ws, 1).astype(np.float32)
      level = (level - np.float32(127.5)) * np.float32(0.0078125)
      reg, prob = self.pnet(level[None], bucket=self.bucket)
      p = prob[0, ..., 1]
      ys, xs = np.nonzero(p >= self.thresholds[0])
      if len(ys) == 0:
        continue
      sc = np.float32(scale)
      bb = np.stack([xs, ys], 1).astype(np.float32)
      q1 = np.floor((2 * bb + 1) / sc)
      q2 = np.floor((2 * bb + 12) / sc)
      boxes = np.concatenate([q1, q2, p[ys, xs][:, None], reg[0, ys, xs]], 1).astype(np.float32)
      all_boxes.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
    if not all_boxes:
      return empty
    boxes = np.concatenate(all_boxes)
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    boxes = np.stack(
        [
            boxes[:, 0] + boxes[:, 5] * regw,
            boxes[:, 1] + boxes[:, 6] * regh,
            boxes[:, 2] + boxes[:, 7] * regw,
            boxes[:, 3] + boxes[:, 8] * regh,
            boxes[:, 4],
        ],
        1,
    ).astype(np.float32)
    boxes = _rerec(boxes)
    # Stage 2: R-Net.
    reg, prob = self.rnet(self._crops(imgf, boxes, 24))
    score = prob[:, 1]
    ok = score > self.thresholds[1]
    boxes = np.concatenate([boxes[ok, :4], score[ok, None]], 1)
    mv = reg[ok]
    if len(boxes) == 0:
      return empty
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes = _rerec(_bbreg(boxes[pick], mv[pick]))
    # Stage 3: O-Net.
    reg, pts, prob = self.onet(self._crops(imgf, boxes, 48))
    score = prob[:, 1]
    ok = score > self.thresholds[2]
    boxes = np.concatenate([boxes[ok, :4], score[ok, None]], 1)
    pts, mv = pts[ok], reg[ok]
    if len(boxes) == 0:
      return empty
    wi = boxes[:, 2] - boxes[:, 0] + np.float32(1)
    hi = boxes[:, 3] - boxes[:, 1] + np.float32(1)
    px = wi[:, None] * pts[:, :5] + boxes[:, 0:1] - np.float32(1)
    py = hi[:, None] * pts[:, 5:] + boxes[:, 1:2] - np.float32(1)
    landmarks = np.stack([px, py], -1).astype(np.float32)
    boxes = _bbreg(boxes, mv)
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7, method="min")
    return Detections(
        boxes[pick, :4].astype(np.float32), boxes[pick, 4].astype(np.float32), landmarks[pick]
    )


@functools.lru_cache(maxsize=2)
def default_detector(source: str | None = None) -> MTCNN:
  """A cached :class:`MTCNN` on the weights of ``source`` (default: the wheel's)."""
  from deocc_jax.conversion.mtcnn_weights import load_mtcnn_params

  return MTCNN(load_mtcnn_params(source))


def detect_landmarks_mtcnn(
    image: np.ndarray, source: str | os.PathLike[str] | None = None
) -> np.ndarray:
  """(F, 5, 2) float64 landmarks (CelebA order) of the faces MTCNN finds.

  Raises:
    ValueError: no face found.
  """
  det = default_detector(None if source is None else os.fspath(source)).detect(image)
  if len(det) == 0:
    img = np.asarray(image)
    raise ValueError(f"MTCNN found no face in the {img.shape[1]}x{img.shape[0]} image")
  return det.landmarks.astype(np.float64)
