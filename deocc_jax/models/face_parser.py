"""A small face-parsing network for GFC's semantic parsing loss (GFC Sec. 3.2).

GFC's parser is a VGG-19 encoder with a max-unpooling decoder (after Yang et
al.'s fully convolutional contour network) trained on Helen's 11 classes, and
frozen while the generator trains. Ours is deliberately small, trained on
the landmark-rasterised labels of :mod:`deocc_jax.data.face_parsing`
(5 classes):

* 3x3 conv w, ReLU; 3x3 stride-2 conv 2w, ReLU; 3x3 dilated (rate 2) conv
  2w, ReLU;
* nearest x2 upsampling, concatenation with the first layer's features (a
  skip connection keeps part boundaries sharp), 3x3 conv w, ReLU;
* 1x1 conv to ``num_classes`` logits.

H and W must be even. :func:`parsing_step` is one pure optax training step
(pixel-wise softmax cross-entropy) so a stage can pretrain it on clean faces.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from deocc_jax.losses.gfc import pixel_cross_entropy

Dtype = Any

#: = ``len(deocc_jax.data.face_parsing.CLASSES)`` (background, skin, eyes, nose, mouth).
NUM_PARSING_CLASSES = 5


class FaceParser(nn.Module):
  """(B, H, W, 3) images in [-1, 1] -> (B, H, W, num_classes) float32 logits."""

  num_classes: int = NUM_PARSING_CLASSES
  width: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must have shape (B, H, W, 3), got {images.shape}")
    if images.shape[1] % 2 or images.shape[2] % 2:
      raise ValueError(f"FaceParser needs even H and W, got {images.shape}")
    w = self.width

    def conv(h, f, k, name, stride=1, rate=1):
      return nn.Conv(
          f,
          (k, k),
          strides=(stride, stride),
          kernel_dilation=(rate, rate),
          padding="SAME",
          dtype=self.dtype,
          param_dtype=jnp.float32,
          name=name,
      )(h)

    x = images.astype(self.dtype)
    f1 = nn.relu(conv(x, w, 3, "conv1"))
    h = nn.relu(conv(f1, 2 * w, 3, "conv2", stride=2))
    h = nn.relu(conv(h, 2 * w, 3, "conv3", rate=2))
    h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
    h = jnp.concatenate([h, f1], axis=-1)
    h = nn.relu(conv(h, w, 3, "conv4"))
    logits = conv(h, self.num_classes, 1, "logits").astype(jnp.float32)
    chex.assert_shape(logits, (*images.shape[:3], self.num_classes))
    return logits


def parsing_loss(
    model: FaceParser, params: Any, images: jax.Array, labels: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean pixel cross-entropy and pixel accuracy of ``model`` on (images, labels)."""
  logits = model.apply({"params": params}, images)
  loss = pixel_cross_entropy(logits, labels)
  acc = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
  return loss, {"loss": loss, "accuracy": acc}


def parsing_step(
    model: FaceParser,
    tx: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    images: jax.Array,
    labels: jax.Array,
) -> tuple[Any, Any, dict[str, jax.Array]]:
  """One optax step on the pixel cross-entropy; returns ``(params, opt_state, metrics)``.

  Pure: jit it with ``model`` and ``tx`` closed over (e.g.
  ``jax.jit(functools.partial(parsing_step, model, tx))``). ``metrics`` are
  the loss and pixel accuracy *before* the update.
  """
  (_, metrics), grads = jax.value_and_grad(
      lambda p: parsing_loss(model, p, images, labels), has_aux=True
  )(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return params, opt_state, {**metrics, "grad_norm": optax.tree.norm(grads)}
