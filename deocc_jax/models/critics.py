"""Global and local critics (DeepFill v1 / Iizuka et al.), paper Sec. 3.2, Eq. 8.

Both critics are stacks of 5x5 stride-2 SAME convolutions with leaky ReLU
(slope 0.2, TF's default) followed by a dense layer to one logit. Widths:

* global critic: (cnum, 2cnum, 4cnum, 4cnum), on the whole image;
* local critic: (cnum, 2cnum, 4cnum, 8cnum) by default, as in the official
  DeepFill v1 ``build_wgan_local_discriminator`` (configurable through
  ``multipliers``), on the hole's bounding box cropped and resized to a fixed
  size by :func:`crop_hole_boxes`.

No normalisation layers, so samples are independent (needed by the per-sample
gradient penalty).
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


def hole_boxes(masks: jax.Array) -> jax.Array:
  """Per-sample bounding boxes ``[top, left, bottom, right)`` (int32) of ``mask > 0.5``.

  A sample with an empty mask gets the whole image. Jit-compatible.
  """
  chex.assert_rank(masks, 4)
  _, h, w, _ = masks.shape
  hole = masks[..., 0] > 0.5
  rows = jnp.any(hole, axis=2)  # (B, H)
  cols = jnp.any(hole, axis=1)  # (B, W)
  ir = jnp.arange(h)
  ic = jnp.arange(w)
  top = jnp.min(jnp.where(rows, ir, h), axis=1)
  bottom = jnp.max(jnp.where(rows, ir + 1, 0), axis=1)
  left = jnp.min(jnp.where(cols, ic, w), axis=1)
  right = jnp.max(jnp.where(cols, ic + 1, 0), axis=1)
  empty = ~jnp.any(rows, axis=1)
  top = jnp.where(empty, 0, top)
  left = jnp.where(empty, 0, left)
  bottom = jnp.where(empty, h, bottom)
  right = jnp.where(empty, w, right)
  return jnp.stack([top, left, bottom, right], axis=-1).astype(jnp.int32)


def crop_hole_boxes(
    images: jax.Array, masks: jax.Array, size: int | tuple[int, int], boxes: jax.Array | None = None
) -> jax.Array:
  """Crop each sample's hole bounding box and resize it to ``size`` (bilinear).

  Resampling uses half-pixel centres: output pixel ``i`` samples input row
  ``top + (i + 0.5) * (bottom - top) / size - 0.5`` (with antialiasing when the
  box is larger than ``size``), via :func:`jax.image.scale_and_translate`.
  Differentiable w.r.t. ``images``; jit-compatible (boxes are data, shapes are
  static).

  Args:
    images: (B, H, W, C).
    masks: (B, H, W, 1), 1 in the hole; used only if ``boxes`` is None.
    size: output side, or (height, width).
    boxes: optional precomputed (B, 4) ``[top, left, bottom, right)`` boxes.

  Returns:
    (B, size_h, size_w, C) in ``images.dtype``.
  """
  if images.ndim != 4:
    raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
  if masks.shape != (*images.shape[:3], 1):
    raise ValueError(f"masks must have shape {(*images.shape[:3], 1)}, got {masks.shape}")
  sh, sw = (size, size) if isinstance(size, int) else tuple(size)
  if sh < 1 or sw < 1:
    raise ValueError(f"size must be positive, got {size}")
  if boxes is None:
    boxes = hole_boxes(masks)
  chex.assert_shape(boxes, (images.shape[0], 4))
  c = images.shape[-1]
  boxes_f = boxes.astype(jnp.float32)

  def one(img: jax.Array, box: jax.Array) -> jax.Array:
    bh = box[2] - box[0]
    bw = box[3] - box[1]
    scale = jnp.stack([sh / bh, sw / bw])
    translation = -box[:2] * scale
    return jax.image.scale_and_translate(
        img.astype(jnp.float32),
        (sh, sw, c),
        (0, 1),
        scale,
        translation,
        method="linear",
        antialias=True,
    )

  out = jax.vmap(one)(images, boxes_f)
  return out.astype(images.dtype)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv_s2(x: jax.Array, w: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=_NHWC)


def conv_s2_transpose_subpixel(dy: jax.Array, w: jax.Array, x_shape: tuple[int, ...]) -> jax.Array:
  """Input gradient of the stride-2 SAME conv ``_conv_s2`` without lhs dilation.

  ``dx[2q + r] = sum_t dy[q - t] * w[2t + r + p]`` (per spatial axis, ``p`` the
  SAME low padding): for each of the 4 output phases ``(ry, rx)`` this is an
  ordinary stride-1 convolution of ``dy`` with a sub-kernel of ``w``, and the
  phases are interleaved. Same FLOPs as the transposed conv; all pieces (and
  their derivatives) are stride-1 convolutions, XLA:CPU's fast path.
  """
  b, h, wd, c = x_shape
  k = w.shape[0]
  ho, wo = dy.shape[1], dy.shape[2]
  out = jnp.zeros(x_shape, dy.dtype)
  pads = []
  for n_in, n_out in ((h, ho), (wd, wo)):
    pads.append(max((n_out - 1) * 2 + k - n_in, 0) // 2)

  def axis_plan(r: int, p: int, n_in: int, n_out: int):
    # taps ky = 2t + r + p in [0, k): t in [t_min, t_max]
    t_min = -((r + p) // 2)
    t_max = (k - 1 - r - p) // 2
    n_r = (n_in - r + 1) // 2
    taps = [2 * t + r + p for t in range(t_max, t_min - 1, -1)]  # correlation order
    lo = t_max  # dy index q - t_max for j = 0
    hi = (n_r - 1 - t_min) - (n_out - 1)
    return taps, lo, hi, n_r

  for ry in range(2):
    ty, ly, hy, nry = axis_plan(ry, pads[0], h, ho)
    if nry <= 0 or not ty:
      continue
    for rx in range(2):
      tx, lx, hx, nrx = axis_plan(rx, pads[1], wd, wo)
      if nrx <= 0 or not tx:
        continue
      kern = w[np.asarray(ty)][:, np.asarray(tx)]  # (len ty, len tx, C, O)
      d = jnp.pad(dy, ((0, 0), (max(ly, 0), max(hy, 0)), (max(lx, 0), max(hx, 0)), (0, 0)))
      d = d[:, max(-ly, 0) : d.shape[1] - max(-hy, 0), max(-lx, 0) : d.shape[2] - max(-hx, 0)]
      ph = jax.lax.conv_general_dilated(
          d, kern, (1, 1), "VALID", dimension_numbers=("NHWC", "HWOI", "NHWC")
      )
      out = out.at[:, ry::2, rx::2].set(ph[:, :nry, :nrx])
  return out


@jax.custom_vjp
def conv_s2_fast_grad(x: jax.Array, w: jax.Array) -> jax.Array:
  """5x5 (any k) stride-2 SAME NHWC conv; same values and gradients as ``lax.conv``.

  Only the differentiation rule differs: the input gradient is computed by
  :func:`conv_s2_transpose_subpixel` (stride-1 convolutions) instead of XLA's
  lhs-dilated transposed convolution. On XLA:CPU the lhs-dilated conv, and above
  all its weight gradient (needed by the gradient penalty's double backward),
  take a slow path (measured up to ~40x the forward conv).
  """
  return _conv_s2(x, w)


def _conv_s2_fwd(x, w):
  return _conv_s2(x, w), (x, w)


def _conv_s2_bwd(res, dy):
  x, w = res
  dx = conv_s2_transpose_subpixel(dy, w, x.shape)
  dw = jax.vjp(lambda w_: _conv_s2(x, w_), w)[1](dy)[0]
  return dx, dw


conv_s2_fast_grad.defvjp(_conv_s2_fwd, _conv_s2_bwd)


class _StridedConv(nn.Module):
  """5x5 stride-2 SAME conv with the same parameters as ``nn.Conv`` ('kernel', 'bias')."""

  features: int
  ksize: int = 5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.param(
        "kernel",
        nn.initializers.xavier_uniform(),
        (self.ksize, self.ksize, x.shape[-1], self.features),
        jnp.float32,
    )
    b = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    y = conv_s2_fast_grad(x.astype(self.dtype), k.astype(self.dtype))
    return y + b.astype(self.dtype)


class Critic(nn.Module):
  """Conv critic: 5x5 stride-2 convs + leaky ReLU, then dense -> one logit per sample.

  ``fast_double_backward=True`` (default) uses :func:`conv_s2_fast_grad`:
  identical parameters, outputs and first/second-order reverse-mode gradients,
  but much faster backward and WGAN-GP double backward on XLA:CPU. It is a
  ``jax.custom_vjp``, so forward-mode AD (``jax.jvp``/``jacfwd``) through the
  critic needs ``fast_double_backward=False`` (plain ``nn.Conv``).
  """

  cnum: int = 64
  multipliers: Sequence[int] = (1, 2, 4, 4)
  dtype: Dtype = jnp.float32
  fast_double_backward: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B,) float32 logits/scores."""
    chex.assert_rank(x, 4)
    h = x.astype(self.dtype)
    for i, m in enumerate(self.multipliers):
      if self.fast_double_backward:
        h = _StridedConv(self.cnum * m, dtype=self.dtype, name=f"conv{i + 1}")(h)
      else:
        h = nn.Conv(
            self.cnum * m,
            (5, 5),
            strides=(2, 2),
            padding="SAME",
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.xavier_uniform(),
            name=f"conv{i + 1}",
        )(h)
      h = nn.leaky_relu(h, negative_slope=0.2)
    h = h.reshape(h.shape[0], -1)
    out = nn.Dense(
        1,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.xavier_uniform(),
        name="fc",
    )(h)
    return out[:, 0].astype(jnp.float32)


def GlobalCritic(
    cnum: int = 64, dtype: Dtype = jnp.float32, fast_double_backward: bool = True  # noqa: N802
) -> Critic:
  """Whole-image critic (cnum, 2cnum, 4cnum, 4cnum)."""
  return Critic(
      cnum=cnum, multipliers=(1, 2, 4, 4), dtype=dtype, fast_double_backward=fast_double_backward
  )


def LocalCritic(
    cnum: int = 64,
    dtype: Dtype = jnp.float32,  # noqa: N802
    multipliers: Sequence[int] = (1, 2, 4, 8),
    fast_double_backward: bool = True,
) -> Critic:
  """Hole-patch critic; DeepFill v1's last layer is 8cnum wide."""
  return Critic(
      cnum=cnum,
      multipliers=tuple(multipliers),
      dtype=dtype,
      fast_double_backward=fast_double_backward,
  )


class GlobalLocalCritics(nn.Module):
  """Both critics in one parameter tree: ``{'global': ..., 'local': ...}``.

  ``__call__(images, local_patches)`` returns ``(d_global, d_local)``, each (B,).
  """

  cnum: int = 64
  local_multipliers: Sequence[int] = (1, 2, 4, 8)
  dtype: Dtype = jnp.float32
  fast_double_backward: bool = True

  def setup(self) -> None:
    self.global_critic = Critic(
        cnum=self.cnum,
        multipliers=(1, 2, 4, 4),
        dtype=self.dtype,
        fast_double_backward=self.fast_double_backward,
    )
    self.local_critic = Critic(
        cnum=self.cnum,
        multipliers=tuple(self.local_multipliers),
        dtype=self.dtype,
        fast_double_backward=self.fast_double_backward,
    )

  def __call__(self, images: jax.Array, local_patches: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.global_critic(images), self.local_critic(local_patches)

  def global_score(self, images: jax.Array) -> jax.Array:
    return self.global_critic(images)

  def local_score(self, local_patches: jax.Array) -> jax.Array:
    return self.local_critic(local_patches)
