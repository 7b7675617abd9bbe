"""insightface's ArcFace backbone IResNet (iresnet18 .. iresnet200) in Flax.

The layout of ``recognition/arcface_torch/backbones/iresnet.py`` (Duta et al.'s
improved ResNet as trained by insightface; the ArcFace models ``ms1mv3_r50``,
``glint360k_r100``, buffalo_l's ``w600k_r50`` ...):

* input: 112 x 112 aligned faces (the 'arcface' template), **RGB**,
  ``(x - 127.5) / 127.5`` (:data:`ARCFACE_MEAN`, :data:`ARCFACE_STD`);
* stem ``conv1`` 3x3 stride 1 (no bias) -> ``bn1`` -> ``prelu``;
* ``layer1..layer4`` of ``IBasicBlock``\\ s with widths 64, 128, 256, 512; the
  first block of every layer has stride 2 (on its **second** conv) and a
  projection shortcut ``downsample`` = 1x1 conv (stride 2) + BN; a block is
  ``bn1 -> conv1 (3x3) -> bn2 -> prelu -> conv2 (3x3, stride) -> bn3`` plus the
  shortcut, **no activation after the addition**;
* ``bn2`` -> flatten (NCHW order: channel, row, column) -> dropout (identity
  at inference) -> ``fc`` (512 * 7 * 7 -> 512, bias) -> ``features``
  (BatchNorm1d). BatchNorm eps 1e-5 everywhere; PReLU has one slope per channel.

Depths (blocks per layer): 18 (2, 2, 2, 2), 34 (3, 4, 6, 3), 50 (3, 4, 14, 3),
100 (3, 13, 30, 3), 200 (6, 26, 60, 6) (:data:`IRESNET_LAYERS`).

Flax module names mirror the PyTorch names (``layer2.0.downsample.1.running_var``
is ``batch_stats/layer2/0/downsample/1/var``; a PReLU slope ``prelu.weight`` is
the Flax param ``prelu/scale``), so :func:`deocc_jax.conversion.torch_weights.
torch_to_flax` maps an arcface_torch ``backbone.pth`` directly; the ONNX models
go through :mod:`deocc_jax.conversion.onnx_arcface`.

Output (inference only): ``{'embedding': (N, num_features)}``, **not**
normalised (the ``features`` output; L2-normalise for cosine scores). No
classifier: insightface ships the backbone only.
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

from deocc_jax.models.resnet_parts import ProjectionShortcut, inference_batch_norm

__all__ = [
    "ARCFACE_INPUT_SIZE",
    "ARCFACE_MEAN",
    "ARCFACE_STD",
    "IRESNET_LAYERS",
    "IRESNET_WIDTHS",
    "PReLU",
    "IBasicBlock",
    "IResNet",
    "preprocess",
]

ARCFACE_INPUT_SIZE: int = 112
ARCFACE_MEAN: tuple[float, float, float] = (127.5, 127.5, 127.5)
ARCFACE_STD: tuple[float, float, float] = (127.5, 127.5, 127.5)
IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}
IRESNET_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)


def preprocess(rgb_uint8: Any) -> jnp.ndarray:
  """RGB [0, 255] -> ``(x - 127.5) / 127.5`` (insightface's ArcFace input)."""
  x = jnp.asarray(rgb_uint8).astype(jnp.float32)
  chex.assert_axis_dimension(x, -1, 3)
  return (x - 127.5) / 127.5


def _conv3x3(features: int, stride: int, dtype: Any, name: str) -> nn.Conv:
  return nn.Conv(
      features,
      (3, 3),
      strides=(stride, stride),
      padding=((1, 1), (1, 1)),
      use_bias=False,
      dtype=dtype,
      name=name,
  )


class PReLU(nn.Module):
  """``torch.nn.PReLU(C)``: ``max(x, 0) + a_c * min(x, 0)``; the slope is ``scale``."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    a = self.param("scale", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
    return jnp.where(x >= 0, x, a.astype(self.dtype) * x)


class IBasicBlock(nn.Module):
  """``bn1 -> conv1 -> bn2 -> prelu -> conv2(stride) -> bn3`` + shortcut."""

  planes: int
  stride: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    d = self.dtype
    out = inference_batch_norm("bn1", d)(x)
    out = _conv3x3(self.planes, 1, d, "conv1")(out)
    out = inference_batch_norm("bn2", d)(out)
    out = PReLU(d, name="prelu")(out)
    out = _conv3x3(self.planes, self.stride, d, "conv2")(out)
    out = inference_batch_norm("bn3", d)(out)
    identity = (
        ProjectionShortcut(self.planes, self.stride, d, name="downsample")(x)
        if self.downsample
        else x
    )
    chex.assert_equal_shape([out, identity])
    return out + identity


class _Layer(nn.Module):
  """``layerK``: ``nn.Sequential`` of blocks named ``"0"``, ``"1"``, ..."""

  planes: int
  blocks: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for i in range(self.blocks):
      x = IBasicBlock(
          self.planes, 2 if i == 0 else 1, downsample=i == 0, dtype=self.dtype, name=str(i)
      )(x)
    return x


class IResNet(nn.Module):
  """insightface IResNet backbone (inference, NHWC).

  Attributes:
    layers: blocks per layer (:data:`IRESNET_LAYERS`).
    widths: channels of layer1..layer4 (the stem has ``widths[0]``);
      (64, 128, 256, 512) in every published model.
    num_features: embedding size (512).
    dtype: computation dtype (parameters float32).

  Call with ``(N, H, W, 3)`` preprocessed RGB (:func:`preprocess`); the ``fc``
  layer fixes the layer4 map, hence H = W = 112 for the published models
  (16 x the map side in general). Returns ``{'embedding': (N, num_features)}``
  (not normalised).
  """

  layers: Sequence[int] = IRESNET_LAYERS["iresnet50"]
  widths: Sequence[int] = IRESNET_WIDTHS
  num_features: int = 512
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
    chex.assert_rank(x, 4)
    chex.assert_axis_dimension(x, -1, 3)
    if len(self.layers) != 4 or len(self.widths) != 4:
      raise ValueError(f"IResNet needs 4 layers and 4 widths, got {self.layers}, {self.widths}")
    n, d = x.shape[0], self.dtype
    x = x.astype(d)
    x = _conv3x3(int(self.widths[0]), 1, d, "conv1")(x)
    x = inference_batch_norm("bn1", d)(x)
    x = PReLU(d, name="prelu")(x)
    for i, (blocks, width) in enumerate(zip(self.layers, self.widths)):
      x = _Layer(int(width), int(blocks), d, name=f"layer{i + 1}")(x)
    x = inference_batch_norm("bn2", d)(x)
    # torch.flatten on NCHW: channel-major order.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(n, -1)
    x = nn.Dense(self.num_features, dtype=d, name="fc")(x)
    x = inference_batch_norm("features", d)(x)
    chex.assert_shape(x, (n, self.num_features))
    return {"embedding": x.astype(jnp.float32)}
