"""InceptionResnetV1 face recogniser (FaceNet, facenet-pytorch layout) in Flax.

The network reproduces ``InceptionResnetV1`` as published with facenet-pytorch
(timesler/facenet-pytorch, ``models/inception_resnet_v1.py``) whose VGGFace2
weights ship as the state dict ``20180402-114759-vggface2.pt``:

* input: aligned face crops, 160 x 160, RGB, standardised ``(x - 127.5) / 128``
  (:func:`preprocess`);
* stem ``conv2d_1a .. conv2d_4b`` + ``maxpool_3a``; ``repeat_1`` = 5 x Block35
  (scale 0.17); ``mixed_6a``; ``repeat_2`` = 10 x Block17 (scale 0.10); ``mixed_7a``;
  ``repeat_3`` = 5 x Block8 (scale 0.20); ``block8`` (scale 1.0, no ReLU);
  global average pool; dropout (identity at inference); ``last_linear`` (1792 -> 512,
  no bias); ``last_bn`` (BatchNorm1d, eps 1e-3); ``logits`` (512 -> 8631);
* ``BasicConv2d`` = conv (no bias) + BatchNorm (eps 1e-3) + ReLU.

PyTorch padding semantics are reproduced with explicit symmetric padding tuples
(output size ``floor((n + 2p - k) / s) + 1``), never ``'SAME'``. Tensors are NHWC.
The Flax module names mirror the PyTorch module names one to one (``nn.Sequential``
children are named ``"0"``, ``"1"``, ...), so that the PyTorch key
``repeat_1.0.branch1.1.conv.weight`` is the Flax path
``params/repeat_1/0/branch1/1/conv/kernel``.

Outputs (inference mode only; BatchNorm uses the running statistics):

* ``embedding``: the L2-normalised 512-d output of ``last_bn`` (what
  facenet-pytorch returns with ``classify=False``);
* ``logits``: ``logits(last_bn(...))`` over the 8,631 VGGFace2 training identities
  (what facenet-pytorch returns with ``classify=True``); computed from the
  *un-normalised* ``last_bn`` output, as in the reference.
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

__all__ = [
    "FACENET_INPUT_SIZE",
    "FACENET_EMBEDDING_SIZE",
    "FACENET_NUM_CLASSES",
    "FACENET_MEAN",
    "FACENET_STD",
    "BasicConv2d",
    "ConvChain",
    "Block35",
    "Block17",
    "Block8",
    "Mixed6a",
    "Mixed7a",
    "InceptionResnetV1",
    "preprocess",
    "preprocess_facenet",
]

#: Input height and width the published weights were trained at.
FACENET_INPUT_SIZE: int = 160
#: Size of the face embedding.
FACENET_EMBEDDING_SIZE: int = 512
#: VGGFace2 training identities of the published classifier head.
FACENET_NUM_CLASSES: int = 8631
#: ``fixed_image_standardization``: ``(x - 127.5) / 128`` on RGB in [0, 255].
FACENET_MEAN: tuple[float, float, float] = (127.5, 127.5, 127.5)
FACENET_STD: tuple[float, float, float] = (128.0, 128.0, 128.0)

_BN_EPS = 1e-3
# Flax momentum is 1 - PyTorch momentum (0.1); unused at inference.
_BN_MOMENTUM = 0.9

Pair = tuple[int, int]


def _pair(v: int | Sequence[int]) -> Pair:
  """``3 -> (3, 3)``; ``(1, 7) -> (1, 7)``."""
  if isinstance(v, int):
    return (v, v)
  a, b = v
  return (int(a), int(b))


def _torch_max_pool(x: jnp.ndarray, k: int = 3, s: int = 2) -> jnp.ndarray:
  """``torch.nn.MaxPool2d(k, stride=s)`` (no padding, floor mode) on NHWC."""
  return nn.max_pool(x, (k, k), strides=(s, s), padding="VALID")


def preprocess(rgb_uint8: Any) -> jnp.ndarray:
  """Standardise RGB images for :class:`InceptionResnetV1`.

  Args:
    rgb_uint8: ``(..., H, W, 3)`` RGB values in [0, 255] (uint8 or float); faces
      already aligned and cropped to 160 x 160.

  Returns:
    float32 ``(x - 127.5) / 128`` (facenet-pytorch's ``fixed_image_standardization``),
    channel order unchanged (RGB).
  """
  x = jnp.asarray(rgb_uint8)
  chex.assert_axis_dimension(x, -1, 3)
  x = x.astype(jnp.float32)
  return (x - jnp.asarray(FACENET_MEAN, jnp.float32)) / jnp.asarray(FACENET_STD, jnp.float32)


#: Alias naming the architecture.
preprocess_facenet = preprocess


class BasicConv2d(nn.Module):
  """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU, PyTorch padding semantics.

  Attributes:
    features: output channels.
    kernel_size: ``k`` or ``(kh, kw)``.
    stride: stride in both directions.
    padding: symmetric zero padding ``p`` or ``(ph, pw)`` (PyTorch ``padding=``).
    dtype: computation dtype.
  """

  features: int
  kernel_size: int | Sequence[int]
  stride: int = 1
  padding: int | Sequence[int] = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    ph, pw = _pair(self.padding)
    x = nn.Conv(
        self.features,
        _pair(self.kernel_size),
        strides=(self.stride, self.stride),
        padding=((ph, ph), (pw, pw)),
        use_bias=False,
        dtype=self.dtype,
        name="conv",
    )(x)
    x = nn.BatchNorm(
        use_running_average=True,
        momentum=_BN_MOMENTUM,
        epsilon=_BN_EPS,
        dtype=self.dtype,
        name="bn",
    )(x)
    return nn.relu(x)


class ConvChain(nn.Module):
  """``nn.Sequential`` of :class:`BasicConv2d`, children named ``"0"``, ``"1"``, ...

  Attributes:
    specs: per conv ``(features, kernel_size, stride, padding)``.
    dtype: computation dtype.
  """

  specs: tuple[tuple[int, int | tuple[int, int], int, int | tuple[int, int]], ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for i, (f, k, s, p) in enumerate(self.specs):
      x = BasicConv2d(f, k, s, p, dtype=self.dtype, name=str(i))(x)
    return x


class Block35(nn.Module):
  """Inception-ResNet-A block on 35x35-grid features (256 channels)."""

  scale: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    chex.assert_axis_dimension(x, -1, 256)
    d = self.dtype
    x0 = BasicConv2d(32, 1, dtype=d, name="branch0")(x)
    x1 = ConvChain(((32, 1, 1, 0), (32, 3, 1, 1)), dtype=d, name="branch1")(x)
    x2 = ConvChain(((32, 1, 1, 0), (32, 3, 1, 1), (32, 3, 1, 1)), dtype=d, name="branch2")(x)
    out = jnp.concatenate([x0, x1, x2], axis=-1)
    out = nn.Conv(256, (1, 1), padding="VALID", use_bias=True, dtype=d, name="conv2d")(out)
    return nn.relu(out * self.scale + x)


class Block17(nn.Module):
  """Inception-ResNet-B block on 17x17-grid features (896 channels)."""

  scale: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    chex.assert_axis_dimension(x, -1, 896)
    d = self.dtype
    x0 = BasicConv2d(128, 1, dtype=d, name="branch0")(x)
    x1 = ConvChain(
        ((128, 1, 1, 0), (128, (1, 7), 1, (0, 3)), (128, (7, 1), 1, (3, 0))),
        dtype=d,
        name="branch1",
    )(x)
    out = jnp.concatenate([x0, x1], axis=-1)
    out = nn.Conv(896, (1, 1), padding="VALID", use_bias=True, dtype=d, name="conv2d")(out)
    return nn.relu(out * self.scale + x)


class Block8(nn.Module):
  """Inception-ResNet-C block on 8x8-grid features (1792 channels).

  Attributes:
    scale: residual scale.
    no_relu: skip the final ReLU (the stand-alone ``block8`` of the network).
    dtype: computation dtype.
  """

  scale: float = 1.0
  no_relu: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    chex.assert_axis_dimension(x, -1, 1792)
    d = self.dtype
    x0 = BasicConv2d(192, 1, dtype=d, name="branch0")(x)
    x1 = ConvChain(
        ((192, 1, 1, 0), (192, (1, 3), 1, (0, 1)), (192, (3, 1), 1, (1, 0))),
        dtype=d,
        name="branch1",
    )(x)
    out = jnp.concatenate([x0, x1], axis=-1)
    out = nn.Conv(1792, (1, 1), padding="VALID", use_bias=True, dtype=d, name="conv2d")(out)
    out = out * self.scale + x
    return out if self.no_relu else nn.relu(out)


class Mixed6a(nn.Module):
  """Reduction-A: 256 -> 384 + 256 + 256 = 896 channels, stride 2."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    d = self.dtype
    x0 = BasicConv2d(384, 3, 2, dtype=d, name="branch0")(x)
    x1 = ConvChain(((192, 1, 1, 0), (192, 3, 1, 1), (256, 3, 2, 0)), dtype=d, name="branch1")(x)
    x2 = _torch_max_pool(x)
    return jnp.concatenate([x0, x1, x2], axis=-1)


class Mixed7a(nn.Module):
  """Reduction-B: 896 -> 384 + 256 + 256 + 896 = 1792 channels, stride 2."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    d = self.dtype
    x0 = ConvChain(((256, 1, 1, 0), (384, 3, 2, 0)), dtype=d, name="branch0")(x)
    x1 = ConvChain(((256, 1, 1, 0), (256, 3, 2, 0)), dtype=d, name="branch1")(x)
    x2 = ConvChain(((256, 1, 1, 0), (256, 3, 1, 1), (256, 3, 2, 0)), dtype=d, name="branch2")(x)
    x3 = _torch_max_pool(x)
    return jnp.concatenate([x0, x1, x2, x3], axis=-1)


class _Repeat(nn.Module):
  """``nn.Sequential`` of ``count`` identical residual blocks named ``"0"``, ``"1"``, ..."""

  block: str  # "block35" | "block17" | "block8"
  count: int
  scale: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    cls = {"block35": Block35, "block17": Block17, "block8": Block8}[self.block]
    for i in range(self.count):
      x = cls(scale=self.scale, dtype=self.dtype, name=str(i))(x)
    return x


class InceptionResnetV1(nn.Module):
  """FaceNet InceptionResnetV1 (facenet-pytorch layout), inference mode, NHWC.

  Attributes:
    num_classes: classes of the ``logits`` head (8,631 for the VGGFace2 weights);
      None or 0: no head (``classify=False`` models), no ``'logits'`` output.
    dtype: computation dtype (parameters stay float32; the embedding is
      normalised and returned in float32).

  Call with ``x``: ``(N, H, W, 3)`` preprocessed images (see :func:`preprocess`;
  160 x 160 for the published weights; any size >= 75 px runs, the global
  average pool is adaptive). Returns ``{'embedding': (N, 512) L2-normalised,
  'logits': (N, num_classes)}``.
  """

  num_classes: int | None = FACENET_NUM_CLASSES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
    chex.assert_rank(x, 4)
    chex.assert_axis_dimension(x, -1, 3)
    n = x.shape[0]
    d = self.dtype
    x = x.astype(d)
    x = BasicConv2d(32, 3, 2, dtype=d, name="conv2d_1a")(x)
    x = BasicConv2d(32, 3, 1, dtype=d, name="conv2d_2a")(x)
    x = BasicConv2d(64, 3, 1, 1, dtype=d, name="conv2d_2b")(x)
    x = _torch_max_pool(x)  # maxpool_3a
    x = BasicConv2d(80, 1, 1, dtype=d, name="conv2d_3b")(x)
    x = BasicConv2d(192, 3, 1, dtype=d, name="conv2d_4a")(x)
    x = BasicConv2d(256, 3, 2, dtype=d, name="conv2d_4b")(x)
    x = _Repeat("block35", 5, 0.17, dtype=d, name="repeat_1")(x)
    x = Mixed6a(dtype=d, name="mixed_6a")(x)
    x = _Repeat("block17", 10, 0.10, dtype=d, name="repeat_2")(x)
    x = Mixed7a(dtype=d, name="mixed_7a")(x)
    x = _Repeat("block8", 5, 0.20, dtype=d, name="repeat_3")(x)
    x = Block8(scale=1.0, no_relu=True, dtype=d, name="block8")(x)
    chex.assert_axis_dimension(x, -1, 1792)
    x = jnp.mean(x, axis=(1, 2))  # avgpool_1a (adaptive, output 1x1)
    x = nn.Dropout(rate=0.6, deterministic=True, name="dropout")(x)
    x = nn.Dense(FACENET_EMBEDDING_SIZE, use_bias=False, dtype=d, name="last_linear")(x)
    x = nn.BatchNorm(
        use_running_average=True, momentum=_BN_MOMENTUM, epsilon=_BN_EPS, dtype=d, name="last_bn"
    )(x)
    # num_classes None / 0: facenet-pytorch's classify=False model without a
    # ``logits`` layer (its state dict has no ``logits.*`` keys).
    logits = (
        nn.Dense(self.num_classes, use_bias=True, dtype=d, name="logits")(x)
        if self.num_classes
        else None
    )
    x32 = x.astype(jnp.float32)
    # F.normalize(p=2, dim=1): x / max(||x||, 1e-12)
    norm = jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True))
    embedding = x32 / jnp.maximum(norm, 1e-12)
    chex.assert_shape(embedding, (n, FACENET_EMBEDDING_SIZE))
    if logits is None:
      return {"embedding": embedding}
    chex.assert_shape(logits, (n, self.num_classes))
    return {"embedding": embedding, "logits": logits}
