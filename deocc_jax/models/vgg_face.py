"""VGGFace, the VGG-16 face descriptor of Parkhi, Vedaldi and Zisserman (BMVC 2015), in Flax.

The layout is the MatConvNet -> PyTorch port of the Oxford VGG Face model by
Samuel Albanie (``vgg_face_dag.py``; weights ``vgg_face_dag.pth``, a state dict):

* input: 224 x 224, **RGB** in [0, 255] minus the per-channel mean ``[129.186279296875,
  104.76238250732422, 93.59396362304688]`` (R, G, B), std 1 (:func:`preprocess`);
* five blocks of 3x3 convolutions (stride 1, pad 1, bias) each followed by ReLU:
  ``conv1_1, conv1_2`` (64), ``conv2_1, conv2_2`` (128), ``conv3_1..3`` (256),
  ``conv4_1..3`` (512), ``conv5_1..3`` (512); after each block a 2x2 max-pool,
  stride 2 (``pool1..pool5``; 224 -> 7);
* ``fc6`` = Linear(512 * 7 * 7 = 25,088 -> 4,096) on the pool5 map **flattened
  in PyTorch's (C, H, W) order**: the NHWC map is transposed to NCHW before the
  flatten, so ``fc6.weight`` maps as any linear layer (dropping the transpose
  silently scrambles fc6's input rows: the conversion test catches it);
* ``relu6``, ``dropout6`` (identity at inference), ``fc7`` (4,096 -> 4,096),
  ``relu7``, ``dropout7``, ``fc8`` (4,096 -> 2,622 identities of the VGG Face
  data set).

Tensors are NHWC; Flax module names are the PyTorch names (``conv3_2.weight`` is
``params/conv3_2/kernel``). The widths are hyper-parameters (``widths``,
``fc_features``) so that the tests can convert a narrow net with the same key
names; the defaults are the published model.

Outputs (inference only):

* ``embedding``: the ``fc7`` output **after** ``relu7`` (the paper's 4,096-d face
  descriptor; not normalised: L2-normalise it for cosine scores);
* ``logits``: ``fc8`` over the 2,622 training identities (when ``num_classes``).
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

__all__ = [
    "VGGFACE_INPUT_SIZE",
    "VGGFACE_MEAN_RGB",
    "VGGFACE_STD",
    "VGGFACE_WIDTHS",
    "VGGFACE_FC_FEATURES",
    "VGGFACE_NUM_CLASSES",
    "VGGFACE_CONVS_PER_BLOCK",
    "VGGFace",
    "preprocess",
]

#: Input height and width of the published model.
VGGFACE_INPUT_SIZE: int = 224
#: Mean subtracted from R, G, B (``vgg_face_dag.py``'s ``meta['mean']``), no scaling.
VGGFACE_MEAN_RGB: tuple[float, float, float] = (
    129.186279296875,
    104.76238250732422,
    93.59396362304688,
)
VGGFACE_STD: tuple[float, float, float] = (1.0, 1.0, 1.0)
#: Channels of conv blocks 1..5.
VGGFACE_WIDTHS: tuple[int, int, int, int, int] = (64, 128, 256, 512, 512)
#: Width of fc6 / fc7 (the embedding size).
VGGFACE_FC_FEATURES: int = 4096
#: Identities of the VGG Face data set (``fc8``).
VGGFACE_NUM_CLASSES: int = 2622
#: 3x3 convolutions per block (VGG-16).
VGGFACE_CONVS_PER_BLOCK: tuple[int, int, int, int, int] = (2, 2, 3, 3, 3)


def preprocess(rgb_uint8: Any) -> jnp.ndarray:
  """RGB [0, 255] images -> VGGFace input (RGB minus ``VGGFACE_MEAN_RGB``, no scaling)."""
  x = jnp.asarray(rgb_uint8).astype(jnp.float32)
  chex.assert_axis_dimension(x, -1, 3)
  return x - jnp.asarray(VGGFACE_MEAN_RGB, jnp.float32)


class VGGFace(nn.Module):
  """VGG-16 face network (inference, NHWC).

  Attributes:
    widths: channels of the five conv blocks (:data:`VGGFACE_WIDTHS`).
    fc_features: width of ``fc6`` / ``fc7`` (4,096), the embedding size.
    num_classes: classes of ``fc8`` (2,622); None: no classifier.
    dtype: computation dtype (parameters stay float32).

  Call with ``(N, H, W, 3)`` preprocessed RGB (:func:`preprocess`); ``fc6`` fixes
  the pool5 map to 7 x 7, i.e. H = W = 224. Returns ``{'embedding': (N,
  fc_features) relu7 output, 'logits': (N, num_classes)}``.
  """

  widths: Sequence[int] = VGGFACE_WIDTHS
  fc_features: int = VGGFACE_FC_FEATURES
  num_classes: int | None = VGGFACE_NUM_CLASSES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
    chex.assert_rank(x, 4)
    chex.assert_axis_dimension(x, -1, 3)
    if len(self.widths) != len(VGGFACE_CONVS_PER_BLOCK):
      raise ValueError(f"VGGFace needs 5 block widths, got {tuple(self.widths)}")
    n, d = x.shape[0], self.dtype
    x = x.astype(d)
    for b, (width, convs) in enumerate(zip(self.widths, VGGFACE_CONVS_PER_BLOCK), start=1):
      for c in range(1, convs + 1):
        x = nn.Conv(int(width), (3, 3), padding=((1, 1), (1, 1)), dtype=d, name=f"conv{b}_{c}")(x)
        x = nn.relu(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    if x.shape[1:3] != (7, 7):
      raise ValueError(
          f"VGGFace: the pool5 map is {x.shape[1]}x{x.shape[2]}, fc6 of the reference "
          "needs 7x7 (use 224 x 224 inputs)"
      )
    # torch's view(N, -1) on NCHW: channel-major order.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(n, -1)
    x = nn.relu(nn.Dense(self.fc_features, dtype=d, name="fc6")(x))
    embedding = nn.relu(nn.Dense(self.fc_features, dtype=d, name="fc7")(x))
    chex.assert_shape(embedding, (n, self.fc_features))
    out = {"embedding": embedding.astype(jnp.float32)}
    if self.num_classes:
      logits = nn.Dense(self.num_classes, dtype=d, name="fc8")(embedding)
      out["logits"] = logits.astype(jnp.float32)
    return out
