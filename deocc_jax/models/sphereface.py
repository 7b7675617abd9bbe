"""SphereFace-20 (``sphere20a``, Liu et al., CVPR 2017) in Flax.

The layout is clcarwin/sphereface_pytorch ``net_sphere.py``, class ``sphere20a``
(its trained weights: ``sphere20a_20171020.pth``, a state dict, CASIA-WebFace):

* input: 112 x 96 (H x W) faces aligned on SphereFace's five-point template,
  **BGR**, ``(x - 127.5) / 128`` (:func:`preprocess`);
* every conv is 3x3, pad 1, with bias, followed by a PReLU with one slope per
  channel (``reluK_J.weight``, shape (C,));
* stage 1: ``conv1_1`` (3 -> 64, stride 2) + ``relu1_1``, one residual unit
  ``x = x + relu1_3(conv1_3(relu1_2(conv1_2(x))))``;
* stage 2: ``conv2_1`` (64 -> 128, stride 2) + ``relu2_1``, two units
  (``conv2_2``/``conv2_3``, ``conv2_4``/``conv2_5``);
* stage 3: ``conv3_1`` (128 -> 256, stride 2) + ``relu3_1``, four units
  (``conv3_2`` .. ``conv3_9``);
* stage 4: ``conv4_1`` (256 -> 512, stride 2) + ``relu4_1``, one unit
  (``conv4_2``/``conv4_3``); the map is 7 x 6;
* ``fc5`` = Linear(512 * 7 * 6 = 21,504 -> 512) on the map **flattened in
  PyTorch's (C, H, W) order** (the NHWC map is transposed to NCHW before the
  flatten, so ``fc5.weight`` maps as any linear layer): the 512-d embedding;
* ``fc6`` = ``AngleLinear(512, 10574)`` (A-Softmax, m = 4, CASIA-WebFace's 10,574
  identities), whose ``weight`` is stored **(in_features, out_features)** =
  (512, 10574), not transposed like ``nn.Linear``'s and without bias.

Tensors are NHWC; Flax module names are the PyTorch names (``relu3_4.weight`` is
``params/relu3_4/scale``, ``fc6.weight`` is ``params/fc6/weight``). The widths are
hyper-parameters (``widths``, ``num_features``) so that the tests can convert a
narrow net with the same key names; the defaults are the published model.

Outputs (inference only):

* ``embedding``: the ``fc5`` output (``sphere20a(feature=True)``), **not**
  normalised: L2-normalise it for cosine scores, as SphereFace's evaluation does;
* ``logits``: the first output of ``AngleLinear``, ``|x| cos(theta_j) = x @
  (W_j / |W_j|)`` (the columns renormalised as ``ww = w.renorm(2, 1, 1e-5) *
  1e5`` and then divided by their norms), i.e. the margin-free scores. The
  second output (``phi_theta``, the angular-margin score of the target class) is
  a training-loss term and is not reproduced.

Choices where the sources leave room: a 112 x 112 input (the ArcFace template's
crop) is cut to its central 96 columns, which is exactly SphereFace's crop:
insightface's 112 x 112 template is SphereFace's 96 x 112 one shifted right by 8
px. This lets pipelines that resize to a square feed the network; any other
width is refused. A column of ``fc6.weight`` with zero norm gives zero scores
(PyTorch: NaN).
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

from deocc_jax.models.iresnet import PReLU

__all__ = [
    "SPHEREFACE_INPUT_SIZE",
    "SPHEREFACE_MEAN",
    "SPHEREFACE_STD",
    "SPHEREFACE_WIDTHS",
    "SPHEREFACE_UNITS",
    "SPHEREFACE_EMBEDDING_SIZE",
    "SPHEREFACE_NUM_CLASSES",
    "AngleLinear",
    "SphereFace20",
    "preprocess",
]

#: (height, width) of the published model's input.
SPHEREFACE_INPUT_SIZE: tuple[int, int] = (112, 96)
#: ``(x - 127.5) / 128`` on every channel (BGR).
SPHEREFACE_MEAN: tuple[float, float, float] = (127.5, 127.5, 127.5)
SPHEREFACE_STD: tuple[float, float, float] = (128.0, 128.0, 128.0)
#: Channels of stages 1..4.
SPHEREFACE_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)
#: Residual units per stage (sphere20a: 1 + 2 + 4 + 1 units = 16 convs, + 4 stride-2 convs).
SPHEREFACE_UNITS: tuple[int, int, int, int] = (1, 2, 4, 1)
#: Size of ``fc5`` (the embedding).
SPHEREFACE_EMBEDDING_SIZE: int = 512
#: CASIA-WebFace identities (``fc6``).
SPHEREFACE_NUM_CLASSES: int = 10574


def preprocess(rgb_uint8: Any) -> jnp.ndarray:
  """RGB [0, 255] images -> SphereFace input (**BGR**, ``(x - 127.5) / 128``)."""
  x = jnp.asarray(rgb_uint8)
  chex.assert_axis_dimension(x, -1, 3)
  bgr = x[..., ::-1].astype(jnp.float32)
  return (bgr - 127.5) / 128.0


class AngleLinear(nn.Module):
  """Margin-free scores of SphereFace's ``AngleLinear``: ``x @ (W / |W|_col)``.

  The parameter ``weight`` has PyTorch's shape (in_features, out_features).
  """

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    w = self.param(
        "weight", nn.initializers.lecun_normal(), (x.shape[-1], self.features), jnp.float32
    )
    norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=0, keepdims=True))
    w = w / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)
    return jnp.dot(x.astype(self.dtype), w.astype(self.dtype))


class SphereFace20(nn.Module):
  """``sphere20a`` (inference, NHWC).

  Attributes:
    widths: channels of stages 1..4 (:data:`SPHEREFACE_WIDTHS`).
    num_features: size of ``fc5`` (512), the embedding.
    num_classes: classes of ``fc6`` (10,574); None: no classifier.
    dtype: computation dtype (parameters stay float32).

  Call with ``(N, 112, 96, 3)`` preprocessed BGR (:func:`preprocess`); a 112 x
  112 input is cut to its central 96 columns. Returns ``{'embedding': (N,
  num_features) fc5 output, 'logits': (N, num_classes)}``.
  """

  widths: Sequence[int] = SPHEREFACE_WIDTHS
  num_features: int = SPHEREFACE_EMBEDDING_SIZE
  num_classes: int | None = SPHEREFACE_NUM_CLASSES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
    chex.assert_rank(x, 4)
    chex.assert_axis_dimension(x, -1, 3)
    if len(self.widths) != len(SPHEREFACE_UNITS):
      raise ValueError(f"SphereFace20 needs 4 stage widths, got {tuple(self.widths)}")
    h, w = SPHEREFACE_INPUT_SIZE
    if x.shape[1:3] == (h, h):
      x = x[:, :, (h - w) // 2 : (h + w) // 2]
    if x.shape[1:3] != (h, w):
      raise ValueError(
          f"SphereFace20 needs 112 x 96 (H x W) inputs (or 112 x 112, cropped), "
          f"got {x.shape[1]}x{x.shape[2]}"
      )
    n, d = x.shape[0], self.dtype
    x = x.astype(d)

    def conv(x: jnp.ndarray, width: int, stride: int, name: str) -> jnp.ndarray:
      x = nn.Conv(
          width, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)), dtype=d, name=name
      )(x)
      return PReLU(d, name=name.replace("conv", "relu"))(x)

    for s, (width, units) in enumerate(zip(self.widths, SPHEREFACE_UNITS), start=1):
      x = conv(x, int(width), 2, f"conv{s}_1")
      for u in range(units):
        y = conv(x, int(width), 1, f"conv{s}_{2 * u + 2}")
        x = x + conv(y, int(width), 1, f"conv{s}_{2 * u + 3}")
    # torch's view(N, -1) on NCHW: channel-major order.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(n, -1)
    embedding = nn.Dense(self.num_features, dtype=d, name="fc5")(x)
    chex.assert_shape(embedding, (n, self.num_features))
    out = {"embedding": embedding.astype(jnp.float32)}
    if self.num_classes:
      out["logits"] = AngleLinear(self.num_classes, d, name="fc6")(embedding).astype(jnp.float32)
    return out
