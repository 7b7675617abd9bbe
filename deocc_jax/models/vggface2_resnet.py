"""VGGFace2 ResNet-50 and SE-ResNet-50 (Cao et al., FG 2018) in Flax.

The networks reproduce the Caffe models of the VGGFace2 authors as ported to
PyTorch by cydonia999/VGGFace2-pytorch (``models/resnet.py``, ``models/senet.py``),
whose weights are distributed as a pickle of numpy arrays keyed by the PyTorch
parameter names (``resnet50_ft_weight.pkl``, ``senet50_ft_weight.pkl``, ...):

* input: 224 x 224, **BGR**, minus the per-channel mean ``[91.4953, 103.8827,
  131.0912]`` (B, G, R), no scaling (:func:`preprocess`);
* ``conv1`` 7x7 stride 2 pad 3 (no bias) + ``bn1`` + ReLU; max-pool 3x3 stride 2,
  pad 0, **ceil mode** (112 -> 56);
* ``layer1..layer4`` = 3, 4, 6, 3 bottlenecks (64, 128, 256, 512 planes, expansion 4);
  Caffe style: the stride sits on the bottleneck's **first 1x1** conv; the projection
  shortcut ``downsample`` = 1x1 conv (stride) + BN on the first block of each layer;
* BatchNorm eps 1e-5 (PyTorch default, as in the reference);
* SE-ResNet-50 only: after ``bn3`` a squeeze-excitation gate, global average pool ->
  ``conv4`` (1x1, C -> C/16, bias) -> ReLU -> ``conv5`` (1x1, C/16 -> C, bias) ->
  sigmoid, multiplied onto the residual branch before the shortcut addition;
* ``avgpool`` 7x7 stride 1 (the layer4 map must be 7 x 7, i.e. a 224 px input or
  any input from 209 to 224 px) -> 2,048-d pooled feature -> ``fc`` (8,631 classes).

Tensors are NHWC. Flax module names mirror the PyTorch names one to one
(``layer2.0.downsample.1.running_var`` is ``batch_stats/layer2/0/downsample/1/var``).

Outputs (inference mode only; BatchNorm uses the running statistics):

* ``embedding``: the pooled 2,048-d feature, **not normalised** (the VGGFace2
  descriptor); L2-normalise it before cosine comparisons;
* ``logits``: ``fc`` output over the 8,631 VGGFace2 training identities.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax.numpy as jnp

from deocc_jax.models.resnet_parts import ProjectionShortcut, inference_batch_norm

__all__ = [
    "VGGFACE2_INPUT_SIZE",
    "VGGFACE2_EMBEDDING_SIZE",
    "VGGFACE2_NUM_CLASSES",
    "VGGFACE2_MEAN_BGR",
    "VGGFACE2_STD",
    "Bottleneck",
    "ResLayer",
    "VGGFace2ResNet",
    "resnet50",
    "senet50",
    "preprocess",
    "preprocess_vggface2",
]

#: Input height and width of the published models.
VGGFACE2_INPUT_SIZE: int = 224
#: Size of the pooled feature (the embedding).
VGGFACE2_EMBEDDING_SIZE: int = 2048
#: VGGFace2 identities the Caffe models were trained on.
VGGFACE2_NUM_CLASSES: int = 8631
#: Mean subtracted from B, G, R (``resnet50_ft.prototxt``), no std scaling.
VGGFACE2_MEAN_BGR: tuple[float, float, float] = (91.4953, 103.8827, 131.0912)
VGGFACE2_STD: tuple[float, float, float] = (1.0, 1.0, 1.0)

_SE_REDUCTION = 16
_LAYERS = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (planes, blocks, stride)


def preprocess(rgb_uint8: Any) -> jnp.ndarray:
  """RGB images -> VGGFace2 ResNet input (BGR minus the Caffe mean, no scaling).

  Args:
    rgb_uint8: ``(..., H, W, 3)`` **RGB** values in [0, 255] (uint8 or float);
      faces already cropped to 224 x 224.

  Returns:
    float32 ``(..., H, W, 3)`` in **BGR** order minus ``VGGFACE2_MEAN_BGR``.
  """
  x = jnp.asarray(rgb_uint8)
  chex.assert_axis_dimension(x, -1, 3)
  bgr = x[..., ::-1].astype(jnp.float32)
  return bgr - jnp.asarray(VGGFACE2_MEAN_BGR, jnp.float32)


#: Alias naming the architecture family.
preprocess_vggface2 = preprocess


def _ceil_mode_pad(n: int, k: int, s: int) -> int:
  """Extra right padding so a VALID pool yields PyTorch's ``ceil_mode=True`` size (pad 0)."""
  out = -(-(n - k) // s) + 1
  if (out - 1) * s >= n:  # PyTorch: the last window must start inside the input
    out -= 1
  return max((out - 1) * s + k - n, 0)


def max_pool_ceil(x: jnp.ndarray, k: int = 3, s: int = 2) -> jnp.ndarray:
  """``torch.nn.MaxPool2d(k, s, padding=0, ceil_mode=True)`` on NHWC.

  The missing bottom/right cells of the last windows are padded with ``-inf``
  (Flax pads pooling windows with the reduction's init value).
  """
  ph = _ceil_mode_pad(x.shape[1], k, s)
  pw = _ceil_mode_pad(x.shape[2], k, s)
  return nn.max_pool(x, (k, k), strides=(s, s), padding=((0, ph), (0, pw)))


class Bottleneck(nn.Module):
  """Caffe-style bottleneck (stride on ``conv1``), optional squeeze-excitation.

  Attributes:
    planes: bottleneck width; the output has ``4 * planes`` channels.
    stride: stride of ``conv1`` (and of the projection shortcut).
    downsample: use the projection shortcut (first block of each layer).
    se: add the SE gate (``conv4``/``conv5``, reduction 16).
    dtype: computation dtype.
  """

  planes: int
  stride: int = 1
  downsample: bool = False
  se: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    d, p, s = self.dtype, self.planes, self.stride
    out = nn.Conv(
        p, (1, 1), strides=(s, s), padding="VALID", use_bias=False, dtype=d, name="conv1"
    )(x)
    out = nn.relu(inference_batch_norm("bn1", d)(out))
    out = nn.Conv(p, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=d, name="conv2")(out)
    out = nn.relu(inference_batch_norm("bn2", d)(out))
    out = nn.Conv(4 * p, (1, 1), padding="VALID", use_bias=False, dtype=d, name="conv3")(out)
    out = inference_batch_norm("bn3", d)(out)
    if self.se:
      # F.avg_pool2d(out, kernel_size=H): the global mean for the square maps used here.
      g = jnp.mean(out, axis=(1, 2), keepdims=True)
      g = nn.Conv(4 * p // _SE_REDUCTION, (1, 1), use_bias=True, dtype=d, name="conv4")(g)
      g = nn.relu(g)
      g = nn.Conv(4 * p, (1, 1), use_bias=True, dtype=d, name="conv5")(g)
      out = out * nn.sigmoid(g)
    residual = ProjectionShortcut(4 * p, s, dtype=d, name="downsample")(x) if self.downsample else x
    chex.assert_equal_shape([out, residual])
    return nn.relu(out + residual)


class ResLayer(nn.Module):
  """``nn.Sequential`` of bottlenecks (``layerK``); children ``"0"``, ``"1"``, ..."""

  planes: int
  blocks: int
  stride: int
  se: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for i in range(self.blocks):
      first = i == 0
      x = Bottleneck(
          self.planes,
          stride=self.stride if first else 1,
          # The first block projects: stride != 1 or channels change (64 -> 256 in layer1).
          downsample=first and (self.stride != 1 or x.shape[-1] != 4 * self.planes),
          se=self.se,
          dtype=self.dtype,
          name=str(i),
      )(x)
    return x


class VGGFace2ResNet(nn.Module):
  """VGGFace2 ResNet-50 (``se=False``) / SE-ResNet-50 (``se=True``), inference, NHWC.

  Attributes:
    se: squeeze-excitation blocks (SE-ResNet-50 / "senet50").
    num_classes: classes of the ``fc`` head (8,631 for the VGGFace2 models).
    dtype: computation dtype (parameters stay float32).

  Call with ``x``: ``(N, H, W, 3)`` preprocessed BGR images (see
  :func:`preprocess`); 224 x 224 for the published models (the 7x7 average pool
  needs a 7 x 7 layer4 map). Returns ``{'embedding': (N, 2048) pooled feature (not
  normalised; L2-normalise for cosine similarity), 'logits': (N, num_classes)}``.
  """

  se: bool = False
  num_classes: int = VGGFACE2_NUM_CLASSES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
    chex.assert_rank(x, 4)
    chex.assert_axis_dimension(x, -1, 3)
    n = x.shape[0]
    if self.se and x.shape[1] != x.shape[2]:
      # The reference SE gate pools with kernel_size=H, i.e. it assumes square maps.
      raise ValueError(f"VGGFace2 SE-ResNet-50 needs square inputs, got {x.shape[1]}x{x.shape[2]}")
    d = self.dtype
    x = x.astype(d)
    x = nn.Conv(
        64, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False, dtype=d, name="conv1"
    )(x)
    x = nn.relu(inference_batch_norm("bn1", d)(x))
    x = max_pool_ceil(x, 3, 2)
    for i, (planes, blocks, stride) in enumerate(_LAYERS):
      x = ResLayer(planes, blocks, stride, se=self.se, dtype=d, name=f"layer{i + 1}")(x)
    if x.shape[1:3] != (7, 7):
      raise ValueError(
          f"VGGFace2ResNet: the layer4 map is {x.shape[1]}x{x.shape[2]}, the 7x7 average "
          "pool of the reference needs 7x7 (use 224 x 224 inputs)"
      )
    x = nn.avg_pool(x, (7, 7), strides=(1, 1), padding="VALID")  # avgpool -> (N, 1, 1, 2048)
    embedding = x.reshape(n, -1)
    logits = nn.Dense(self.num_classes, dtype=d, name="fc")(embedding)
    chex.assert_shape(embedding, (n, VGGFACE2_EMBEDDING_SIZE))
    chex.assert_shape(logits, (n, self.num_classes))
    return {"embedding": embedding, "logits": logits}


def resnet50(num_classes: int = VGGFACE2_NUM_CLASSES, dtype: Any = jnp.float32) -> VGGFace2ResNet:
  """VGGFace2 ResNet-50 (``resnet50_ft`` / ``resnet50_scratch`` weights)."""
  return VGGFace2ResNet(se=False, num_classes=num_classes, dtype=dtype)


def senet50(num_classes: int = VGGFACE2_NUM_CLASSES, dtype: Any = jnp.float32) -> VGGFace2ResNet:
  """VGGFace2 SE-ResNet-50 (``senet50_ft`` / ``senet50_scratch`` weights)."""
  return VGGFace2ResNet(se=True, num_classes=num_classes, dtype=dtype)
