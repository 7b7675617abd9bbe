"""Contextual attention (Yu et al., CVPR 2018; DeepFill v1), paper Sec. 3.2, Eq. 9.

This is a batched, per-sample-mask re-implementation of the official DeepFill v1
``contextual_attention`` op. For inputs the official op accepts (feature sizes
divisible by ``rate``) and a mask shared by the batch, the output is the same
function of the inputs:

1. Raw background patches of ``2*rate`` x ``2*rate`` at stride ``rate*stride``
   (TF ``SAME`` padding: 1 row/column of zeros on the top/left for rate 2) are
   kept for the reconstruction.
2. Foreground, background and mask are downsampled by ``rate`` with TF1's
   ``resize_nearest_neighbor(align_corners=True)``: output index ``i`` reads
   source index ``roundf(float32(i) * float32((H_in - 1) / (H_out - 1)))``
   (not a stride-``rate`` slice).
3. Background ``ksize`` x ``ksize`` patches at stride ``stride`` (zero padded)
   are L2-normalised (norm clamped at 1e-4); foreground patches are not.
   Scores are the correlation of every foreground window with every
   normalised background patch (Eq. 9 up to the foreground norm).
4. Attention propagation ("fuse"): a ``fuse_k`` x ``fuse_k`` identity kernel is
   run over the flattened ``(HW_f, HW_b)`` score matrix, first with both axes in
   row-major pixel order, then with both axes in column-major order.
5. A background patch is *valid* only if its whole ``ksize`` x ``ksize`` window
   of the downsampled mask is zero (zero padding counts as valid). Invalid
   scores are multiplied by 0 (i.e. set to 0, not -inf) before the softmax
   (``softmax_scale`` = lambda in the paper) and the probabilities are
   multiplied by 0 again after it.
6. The output is the transposed convolution of the attention map with the raw
   patches (stride ``rate``), divided by 4, computed at every foreground
   position, with the foreground's shape.

Differences from the official op, all deliberate:

* the mask is per sample, shape ``(B, H_b, W_b, 1)`` (official: one mask for the
  batch);
* feature sizes not divisible by ``rate`` are accepted: the matching grid has
  ``ceil(H / rate)`` rows (official: ``int(H / rate)``, which makes its
  transposed convolution fail for odd sizes, so there is no official output to
  compare with there);
* the attention offset is decoded with the background width (the official
  code uses the foreground width; identical when, as in the generator,
  foreground and background are the same tensor);
* the flow colour image is normalised per sample (official: by a running
  maximum over the batch) and not quantised to uint8.

Matching and softmax always run in float32, whatever the input dtype; the output
is cast back to the foreground's dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np


class ContextualAttentionOutput(NamedTuple):
  """Result of :func:`contextual_attention_with_details`."""

  output: jax.Array  # (B, H_f, W_f, C), reconstruction from background patches
  flow: jax.Array  # (B, H_f, W_f, 3), colour-coded attention offsets in [-1, 1]
  attention: jax.Array  # (B, h_f, w_f, h_b * w_b), masked softmax weights
  offsets: jax.Array  # (B, h_f, w_f, 2) int32, argmax position minus own position
  valid: jax.Array  # (B, h_b * w_b) float32, 1 for usable background patches


def align_corners_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source indices of TF1 ``resize_nearest_neighbor(align_corners=True)``.

  ``idx[i] = min(roundf(float32(i) * s), in_size - 1)`` with
  ``s = float32(in_size - 1) / float32(out_size - 1)`` (``in/out`` if
  ``out_size == 1``); ``roundf`` rounds halves away from zero.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"resize sizes must be >= 1, got in={in_size}, out={out_size}")
  if out_size > 1:
    scale = np.float32(in_size - 1) / np.float32(out_size - 1)
  else:
    scale = np.float32(in_size) / np.float32(out_size)
  pos = np.arange(out_size, dtype=np.float32) * np.float32(scale)
  idx = np.floor(pos + np.float32(0.5)).astype(np.int64)  # roundf for x >= 0
  return np.minimum(idx, in_size - 1)


def resize_nearest_align_corners(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
  """Nearest-neighbour resize of NHWC ``x`` with TF1 align-corners semantics."""
  chex.assert_rank(x, 4)
  ih = align_corners_nearest_indices(x.shape[1], out_hw[0])
  iw = align_corners_nearest_indices(x.shape[2], out_hw[1])
  return x[:, ih][:, :, iw]


def _extract_patches_same(x: jax.Array, ksize: int) -> jax.Array:
  """All ``ksize`` x ``ksize`` stride-1 patches of NHWC ``x`` with TF SAME zero padding.

  Returns (B, H, W, ksize, ksize, C).
  """
  total = ksize - 1
  lo, hi = total // 2, total - total // 2
  h, w = x.shape[1], x.shape[2]
  xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  rows = []
  for dy in range(ksize):
    cols = [xp[:, dy : dy + h, dx : dx + w] for dx in range(ksize)]
    rows.append(jnp.stack(cols, axis=3))
  return jnp.stack(rows, axis=3)


def _fuse_rowmajor(y: jax.Array, k: int) -> jax.Array:
  """Identity-kernel 'SAME' conv on the last two axes of (..., P, L): sum_d y[a+d, l+d]."""
  lo = (k - 1) // 2
  hi = k - 1 - lo
  p, l = y.shape[-2], y.shape[-1]
  pad = [(0, 0)] * (y.ndim - 2) + [(lo, hi), (lo, hi)]
  yp = jnp.pad(y, pad)
  out = jnp.zeros_like(y)
  for d in range(k):
    out = out + yp[..., d : d + p, d : d + l]
  return out


def _fuse(scores: jax.Array, hf: int, wf: int, hb: int, wb: int, k: int) -> jax.Array:
  """Official two-pass attention propagation on (B, hf*wf, hb*wb) scores."""
  b = scores.shape[0]
  y = _fuse_rowmajor(scores, k)
  y = y.reshape(b, hf, wf, hb, wb).transpose(0, 2, 1, 4, 3).reshape(b, wf * hf, wb * hb)
  y = _fuse_rowmajor(y, k)
  y = y.reshape(b, wf, hf, wb, hb).transpose(0, 2, 1, 4, 3).reshape(b, hf * wf, hb * wb)
  return y


def _raw_patches(b: jax.Array, rate: int, stride: int) -> tuple[jax.Array, int, int]:
  """``2*rate`` patches at stride ``rate*stride`` (TF SAME). Returns (B, n, 2r, 2r, C)."""
  kernel = 2 * rate
  s = rate * stride
  bsz, h, w, c = b.shape
  nh, nw = -(-h // s), -(-w // s)
  pad_h = max((nh - 1) * s + kernel - h, 0)
  pad_w = max((nw - 1) * s + kernel - w, 0)
  bp = jnp.pad(
      b, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
  )
  rows = []
  for ky in range(kernel):
    cols = [
        bp[:, ky : ky + (nh - 1) * s + 1 : s, kx : kx + (nw - 1) * s + 1 : s]
        for kx in range(kernel)
    ]
    rows.append(jnp.stack(cols, axis=3))
  patches = jnp.stack(rows, axis=3)  # (B, nh, nw, k, k, C)
  return patches.reshape(bsz, nh * nw, kernel, kernel, c), nh, nw


def _overlap_add(patches: jax.Array, out_h: int, out_w: int, rate: int) -> jax.Array:
  """Transposed conv (stride ``rate``, kernel ``2*rate``, TF SAME) of per-position patches.

  ``patches``: (B, h, w, 2r, 2r, C) -> (B, out_h, out_w, C), where position
  (i, j) with kernel tap (ky, kx) lands on ``(rate*i + ky - pad_top, ...)``.
  """
  bsz, h, w, k, _, c = patches.shape
  r = rate
  pad_top = max((h - 1) * r + k - out_h, 0) // 2
  pad_left = max((w - 1) * r + k - out_w, 0) // 2
  # kernel tap ky = r*qy + ry lands on canvas row r*(i+qy) + ry.
  p = patches.reshape(bsz, h, w, 2, r, 2, r, c)
  canvas = jnp.zeros((bsz, h + 1, r, w + 1, r, c), patches.dtype)
  for qy in range(2):
    for qx in range(2):
      part = p[:, :, :, qy, :, qx, :, :].transpose(0, 1, 3, 2, 4, 5)  # (B,h,r,w,r,C)
      part = jnp.pad(part, ((0, 0), (qy, 1 - qy), (0, 0), (qx, 1 - qx), (0, 0), (0, 0)))
      canvas = canvas + part
  canvas = canvas.reshape(bsz, (h + 1) * r, (w + 1) * r, c)
  return canvas[:, pad_top : pad_top + out_h, pad_left : pad_left + out_w]


def _check_inputs(
    f: jax.Array,
    b: jax.Array,
    mask: jax.Array | None,
    ksize: int,
    stride: int,
    rate: int,
    fuse_k: int,
) -> None:
  if f.ndim != 4:
    raise ValueError(f"f must be NHWC (rank 4), got shape {f.shape}")
  if b.ndim != 4:
    raise ValueError(f"b must be NHWC (rank 4), got shape {b.shape}")
  if f.shape[0] != b.shape[0] or f.shape[3] != b.shape[3]:
    raise ValueError(
        f"f and b must share batch and channel sizes, got shapes f {f.shape}, " f"b {b.shape}"
    )
  if mask is not None and mask.shape != (b.shape[0], b.shape[1], b.shape[2], 1):
    raise ValueError(
        f"mask must have shape {(b.shape[0], b.shape[1], b.shape[2], 1)} "
        f"(per-sample, like b), got {mask.shape}"
    )
  if rate < 1 or stride < 1 or ksize < 1 or fuse_k < 1:
    raise ValueError(f"ksize/stride/rate/fuse_k must be >= 1, got {ksize}/{stride}/{rate}/{fuse_k}")
  if stride != 1:
    # The official op's raw patches use stride rate*stride but the matching grid
    # uses stride 1 on the downsampled map; the counts only agree for stride 1.
    raise ValueError(f"only stride=1 is supported (as in DeepFill v1), got stride={stride}")
  if ksize % 2 != 1 or fuse_k % 2 != 1:
    raise ValueError(f"ksize and fuse_k must be odd, got ksize={ksize}, fuse_k={fuse_k}")
  for name, shp in (("f", f.shape), ("b", b.shape)):
    if shp[1] < rate or shp[2] < rate:
      raise ValueError(f"{name} spatial size must be >= rate={rate}, got shape {shp}")


def contextual_attention_with_details(
    f: jax.Array,
    b: jax.Array,
    mask: jax.Array | None = None,
    ksize: int = 3,
    stride: int = 1,
    rate: int = 2,
    fuse_k: int = 3,
    softmax_scale: float = 10.0,
    fuse: bool = True,
) -> ContextualAttentionOutput:
  """Contextual attention returning output, flow and the intermediate attention.

  Args:
    f: foreground features to complete, (B, H_f, W_f, C).
    b: background features to borrow from, (B, H_b, W_b, C).
    mask: (B, H_b, W_b, 1), 1 inside the hole (patches not to borrow), or None.
    ksize, stride, rate, fuse_k, softmax_scale, fuse: as in DeepFill v1.

  Returns:
    :class:`ContextualAttentionOutput`.
  """
  _check_inputs(f, b, mask, ksize, stride, rate, fuse_k)
  out_dtype = f.dtype
  f32 = f.astype(jnp.float32)
  b32 = b.astype(jnp.float32)
  bsz, hf_raw, wf_raw, c = f.shape
  _, hb_raw, wb_raw, _ = b.shape

  raw_w, nh, nw = _raw_patches(b32, rate, stride)  # (B, L, 2r, 2r, C)
  hf, wf = -(-hf_raw // rate), -(-wf_raw // rate)
  hb, wb = -(-hb_raw // rate), -(-wb_raw // rate)
  assert (nh, nw) == (hb, wb), (nh, nw, hb, wb)
  f_d = resize_nearest_align_corners(f32, (hf, wf))
  b_d = resize_nearest_align_corners(b32, (hb, wb))

  # Matching: background patches (normalised) against foreground windows.
  w = _extract_patches_same(b_d, ksize).reshape(bsz, hb * wb, ksize * ksize * c)
  # max(||w||, 1e-4), with a NaN-free gradient for all-zero patches.
  sq = jnp.sum(jnp.square(w), axis=-1, keepdims=True)
  big = sq > 1e-8
  norm = jnp.where(big, jnp.sqrt(jnp.where(big, sq, 1.0)), 1e-4)
  w_norm = w / norm
  fp = _extract_patches_same(f_d, ksize).reshape(bsz, hf * wf, ksize * ksize * c)
  scores = jnp.einsum("bpk,blk->bpl", fp, w_norm, precision=jax.lax.Precision.HIGHEST)

  if fuse:
    scores = _fuse(scores, hf, wf, hb, wb, fuse_k)

  # Mask: valid iff the whole ksize x ksize window of the downsampled mask is zero.
  if mask is None:
    valid = jnp.ones((bsz, hb * wb), jnp.float32)
  else:
    m_d = resize_nearest_align_corners(mask.astype(jnp.float32), (hb, wb))
    m_win = jnp.sum(_extract_patches_same(m_d, ksize), axis=(3, 4, 5))  # (B, hb, wb)
    valid = (m_win == 0.0).astype(jnp.float32).reshape(bsz, hb * wb)
  mm = valid[:, None, :]
  scores = scores * mm
  att = jax.nn.softmax(scores * softmax_scale, axis=-1)
  att = att * mm

  # Offsets (for visualisation only).
  idx = jnp.argmax(att, axis=-1).astype(jnp.int32)  # (B, hf*wf)
  off = jnp.stack([idx // wb, idx % wb], axis=-1).reshape(bsz, hf, wf, 2)
  pos = jnp.stack(jnp.meshgrid(jnp.arange(hf), jnp.arange(wf), indexing="ij"), axis=-1)
  offsets = off - pos[None].astype(jnp.int32)
  flow = flow_to_image(jax.lax.stop_gradient(offsets.astype(jnp.float32)))
  flow = jnp.repeat(jnp.repeat(flow, rate, axis=1), rate, axis=2)[:, :hf_raw, :wf_raw]

  # Reconstruction: transposed conv of the attention map with the raw patches.
  k = 2 * rate
  pasted = jnp.einsum(
      "bpl,blk->bpk",
      att,
      raw_w.reshape(bsz, hb * wb, k * k * c),
      precision=jax.lax.Precision.HIGHEST,
  )
  pasted = pasted.reshape(bsz, hf, wf, k, k, c)
  y = _overlap_add(pasted, hf_raw, wf_raw, rate) / 4.0
  return ContextualAttentionOutput(
      output=y.astype(out_dtype),
      flow=flow,
      attention=att.reshape(bsz, hf, wf, hb * wb),
      offsets=offsets,
      valid=valid,
  )


def contextual_attention(
    f: jax.Array,
    b: jax.Array,
    mask: jax.Array | None = None,
    ksize: int = 3,
    stride: int = 1,
    rate: int = 2,
    fuse_k: int = 3,
    softmax_scale: float = 10.0,
    fuse: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """DeepFill v1 contextual attention with per-sample masks (paper Eq. 9).

  Args:
    f: foreground (B, H_f, W_f, C).
    b: background (B, H_b, W_b, C).
    mask: (B, H_b, W_b, 1), 1 = hole (background patches touching it are not used).
    ksize: matching patch size; stride: matching stride (1 only);
    rate: downsampling rate for matching (raw patches are 2*rate wide);
    fuse_k: attention-propagation kernel; softmax_scale: lambda of the scaled softmax;
    fuse: whether to propagate attention.

  Returns:
    ``(y, flow)``: ``y`` (B, H_f, W_f, C) in ``f.dtype``; ``flow`` (B, H_f, W_f, 3)
    colour image in [-1, 1] of the argmax offsets (no gradient).
  """
  res = contextual_attention_with_details(
      f, b, mask, ksize, stride, rate, fuse_k, softmax_scale, fuse
  )
  return res.output, res.flow


def _color_wheel() -> np.ndarray:
  """Middlebury colour wheel (RY, YG, GC, CB, BM, MR segments), values in [0, 1]."""
  segments = (
      (15, (1, 0, 0), (1, 1, 0)),
      (6, (1, 1, 0), (0, 1, 0)),
      (4, (0, 1, 0), (0, 1, 1)),
      (11, (0, 1, 1), (0, 0, 1)),
      (13, (0, 0, 1), (1, 0, 1)),
      (6, (1, 0, 1), (1, 0, 0)),
  )
  cols = []
  for n, start, end in segments:
    t = np.arange(n, dtype=np.float64)[:, None] / n
    cols.append(np.asarray(start, np.float64) * (1 - t) + np.asarray(end, np.float64) * t)
  return np.concatenate(cols, axis=0)


def flow_to_image(flow: jax.Array) -> jax.Array:
  """Colour-code a (B, H, W, 2) displacement field (dy, dx) into RGB in [-1, 1].

  Hue from the direction on the Middlebury colour wheel, saturation from the
  magnitude normalised by each sample's maximum magnitude (pixels with no
  displacement are white). Pure jnp; jit-compatible.
  """
  chex.assert_rank(flow, 4)
  chex.assert_axis_dimension(flow, 3, 2)
  wheel = jnp.asarray(_color_wheel(), jnp.float32)
  ncols = wheel.shape[0]
  v, u = flow[..., 0], flow[..., 1]  # u: horizontal, v: vertical
  rad = jnp.sqrt(u * u + v * v)
  maxrad = jnp.max(rad, axis=(1, 2), keepdims=True)
  rad = rad / (maxrad + 1e-8)
  ang = jnp.arctan2(-v, -u) / math.pi  # [-1, 1]
  fk = (ang + 1.0) / 2.0 * (ncols - 1)
  k0 = jnp.clip(jnp.floor(fk).astype(jnp.int32), 0, ncols - 1)
  k1 = (k0 + 1) % ncols
  frac = (fk - k0)[..., None]
  col = (1.0 - frac) * wheel[k0] + frac * wheel[k1]
  r = rad[..., None]
  col = jnp.where(r <= 1.0, 1.0 - r * (1.0 - col), col * 0.75)
  return col * 2.0 - 1.0
