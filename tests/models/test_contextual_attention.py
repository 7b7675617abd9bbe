"""Contextual attention vs an independent float64 loop reference of DeepFill v1's op."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.models.contextual_attention import (
    align_corners_nearest_indices,
    contextual_attention,
    contextual_attention_with_details,
    flow_to_image,
)

# ---------------------------------------------------------------------------
# Reference: written with explicit loops over pixels / patches, float64.
# ---------------------------------------------------------------------------


def _tf_nearest_src(in_size: int, out_size: int, i: int) -> int:
  """TF1 resize_nearest_neighbor(align_corners=True) source index (float32 maths)."""
  if out_size > 1:
    s = np.float32(np.float32(in_size - 1) / np.float32(out_size - 1))
  else:
    s = np.float32(np.float32(in_size) / np.float32(out_size))
  v = float(np.float32(np.float32(i) * s))
  r = math.floor(v + 0.5)  # roundf, v >= 0
  return min(r, in_size - 1)


def _down(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
  out = np.zeros((oh, ow, x.shape[2]), np.float64)
  for i in range(oh):
    for j in range(ow):
      out[i, j] = x[_tf_nearest_src(x.shape[0], oh, i), _tf_nearest_src(x.shape[1], ow, j)]
  return out


def _at(x: np.ndarray, i: int, j: int) -> np.ndarray:
  if 0 <= i < x.shape[0] and 0 <= j < x.shape[1]:
    return x[i, j]
  return np.zeros(x.shape[2], np.float64)


def _fuse_loop(s: np.ndarray, k: int) -> np.ndarray:
  half = k // 2
  out = np.zeros_like(s)
  for a in range(s.shape[0]):
    for l in range(s.shape[1]):
      acc = 0.0
      for d in range(-half, half + 1):
        if 0 <= a + d < s.shape[0] and 0 <= l + d < s.shape[1]:
          acc += s[a + d, l + d]
      out[a, l] = acc
  return out


def reference_ca(f, b, mask, ksize=3, rate=2, fuse_k=3, scale=10.0, fuse=True):
  """One sample at a time; returns (y, attention, valid)."""
  f = np.asarray(f, np.float64)
  b = np.asarray(b, np.float64)
  bs, hf_raw, wf_raw, c = f.shape
  hb_raw, wb_raw = b.shape[1:3]
  hf, wf = -(-hf_raw // rate), -(-wf_raw // rate)
  hb, wb = -(-hb_raw // rate), -(-wb_raw // rate)
  half = ksize // 2
  kraw = 2 * rate
  # TF SAME offsets of the raw patches (extract) and of the transposed conv.
  pad_top_b = max((hb - 1) * rate + kraw - hb_raw, 0) // 2
  pad_left_b = max((wb - 1) * rate + kraw - wb_raw, 0) // 2
  pad_top_f = max((hf - 1) * rate + kraw - hf_raw, 0) // 2
  pad_left_f = max((wf - 1) * rate + kraw - wf_raw, 0) // 2
  ys, atts, valids = [], [], []
  for n in range(bs):
    fd = _down(f[n], hf, wf)
    bd = _down(b[n], hb, wb)
    md = _down(np.asarray(mask[n], np.float64), hb, wb)
    nl = hb * wb
    valid = np.zeros(nl)
    wn = np.zeros((nl, ksize, ksize, c))
    for py in range(hb):
      for px in range(wb):
        l = py * wb + px
        ok = True
        for dy in range(-half, half + 1):
          for dx in range(-half, half + 1):
            wn[l, dy + half, dx + half] = _at(bd, py + dy, px + dx)
            if _at(md, py + dy, px + dx)[0] != 0:
              ok = False
        valid[l] = 1.0 if ok else 0.0
        nrm = math.sqrt(float(np.sum(wn[l] ** 2)))
        wn[l] /= max(nrm, 1e-4)
    s = np.zeros((hf * wf, nl))
    for i in range(hf):
      for j in range(wf):
        win = np.zeros((ksize, ksize, c))
        for dy in range(-half, half + 1):
          for dx in range(-half, half + 1):
            win[dy + half, dx + half] = _at(fd, i + dy, j + dx)
        for l in range(nl):
          s[i * wf + j, l] = np.sum(win * wn[l])
    if fuse:
      s = _fuse_loop(s, fuse_k)
      # column-major re-indexing of both axes
      t = np.zeros_like(s)
      for i in range(hf):
        for j in range(wf):
          for py in range(hb):
            for px in range(wb):
              t[j * hf + i, px * hb + py] = s[i * wf + j, py * wb + px]
      t = _fuse_loop(t, fuse_k)
      for i in range(hf):
        for j in range(wf):
          for py in range(hb):
            for px in range(wb):
              s[i * wf + j, py * wb + px] = t[j * hf + i, px * hb + py]
    att = np.zeros_like(s)
    for p in range(hf * wf):
      z = s[p] * valid * scale
      e = np.exp(z - z.max())
      att[p] = e / e.sum() * valid
    y = np.zeros((hf_raw, wf_raw, c))
    for i in range(hf):
      for j in range(wf):
        for l in range(nl):
          a = att[i * wf + j, l]
          if a == 0.0:
            continue
          py, px = divmod(l, wb)
          for ky in range(kraw):
            for kx in range(kraw):
              oy = rate * i + ky - pad_top_f
              ox = rate * j + kx - pad_left_f
              if 0 <= oy < hf_raw and 0 <= ox < wf_raw:
                y[oy, ox] += a * _at(b[n], rate * py + ky - pad_top_b, rate * px + kx - pad_left_b)
    ys.append(y / 4.0)
    atts.append(att.reshape(hf, wf, nl))
    valids.append(valid)
  return np.stack(ys), np.stack(atts), np.stack(valids)


def _random_masks(rng: np.random.Generator, bs: int, h: int, w: int) -> np.ndarray:
  m = np.zeros((bs, h, w, 1), np.float32)
  for n in range(bs):
    if n % 3 == 2:  # scattered pixels
      m[n, ..., 0] = (rng.random((h, w)) < 0.08).astype(np.float32)
    else:  # a box, different per sample
      th, tw = rng.integers(2, h // 2 + 1), rng.integers(2, w // 2 + 1)
      t, l = rng.integers(0, h - th + 1), rng.integers(0, w - tw + 1)
      m[n, t : t + th, l : l + tw, 0] = 1.0
  return m


# (f shape, b spatial shape or None for self-attention, fuse, feature scale).
# Small feature scales keep the softmax soft, so that the excluded-but-zero
# scores (exp(0) terms in the denominator) and the fuse order visibly matter.
CASES = [
    ((2, 16, 16, 4), None, True, 1.0),
    ((2, 16, 16, 4), None, True, 0.1),
    ((3, 12, 20, 3), None, True, 0.2),
    ((2, 16, 12, 2), (12, 16), True, 0.3),  # foreground and background differ
    ((2, 14, 10, 3), None, False, 0.2),  # no fuse; 14->7 and 10->5 have rounding ties
    ((2, 9, 11, 2), None, True, 0.3),  # odd sizes (extension: ceil grid)
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_loop_reference(case):
  fshape, bhw, fuse, scale = CASES[case]
  rng = np.random.default_rng(1000 + case)  # fixed per case: a failure reproduces
  f = (scale * rng.standard_normal(fshape)).astype(np.float32)
  if bhw is None:
    b = f
  else:
    b = (scale * rng.standard_normal((fshape[0], *bhw, fshape[3]))).astype(np.float32)
  mask = _random_masks(rng, fshape[0], b.shape[1], b.shape[2])
  res = jax.jit(contextual_attention_with_details, static_argnames=("fuse",))(
      jnp.asarray(f), jnp.asarray(b), jnp.asarray(mask), fuse=fuse
  )
  y_ref, att_ref, valid_ref = reference_ca(f, b, mask, fuse=fuse)
  assert res.output.shape == f.shape
  assert res.output.dtype == jnp.float32
  assert res.flow.shape == fshape[:3] + (3,)
  np.testing.assert_array_equal(np.asarray(res.valid), valid_ref)
  rel = np.max(np.abs(np.asarray(res.output) - y_ref)) / np.max(np.abs(y_ref))
  print(f"max rel err {fshape} b={bhw} fuse={fuse} scale={scale}: {rel:.3e}")
  assert rel <= 1e-4, rel
  att_err = np.max(np.abs(np.asarray(res.attention) - att_ref))
  assert att_err <= 1e-4, att_err


def test_downsampling_is_align_corners_not_slice():
  # Exact ties in float32 round half away from zero (roundf), not half to even:
  # 14 -> 7: 3 * 13/6 == 6.5 -> 7;  10 -> 5: 2 * 9/4 == 4.5 -> 5.
  np.testing.assert_array_equal(align_corners_nearest_indices(14, 7), [0, 2, 4, 7, 9, 11, 13])
  np.testing.assert_array_equal(align_corners_nearest_indices(10, 5), [0, 2, 5, 7, 9])
  for n_in, n_out in ((14, 7), (10, 5), (64, 32), (9, 5), (5, 1)):
    expect = [_tf_nearest_src(n_in, n_out, i) for i in range(n_out)]
    np.testing.assert_array_equal(align_corners_nearest_indices(n_in, n_out), expect)
  # 16 -> 8 with align corners: 0, 2, 4, 6, 9, 11, 13, 15
  np.testing.assert_array_equal(align_corners_nearest_indices(16, 8), [0, 2, 4, 6, 9, 11, 13, 15])


def test_no_attention_to_hole_patches():
  rng = np.random.default_rng(3)
  # small features so that no valid weight underflows to 0 in float32
  f = jnp.asarray(0.05 * rng.standard_normal((3, 16, 16, 4)).astype(np.float32))
  mask = _random_masks(rng, 3, 16, 16)
  res = jax.jit(contextual_attention_with_details)(f, f, jnp.asarray(mask))
  att = np.asarray(res.attention)
  # Independent check of which downsampled patches touch the hole.
  for n in range(3):
    md = _down(mask[n].astype(np.float64), 8, 8)[..., 0]
    mdp = np.pad(md, 1)
    for py in range(8):
      for px in range(8):
        touches = np.any(mdp[py : py + 3, px : px + 3] != 0)
        w = att[n, :, :, py * 8 + px]
        if touches:
          assert np.all(w == 0.0), (n, py, px)
        else:
          assert np.all(w > 0.0), (n, py, px)
  # each sample has its own mask: validity differs between samples
  v = np.asarray(res.valid)
  assert not np.array_equal(v[0], v[1])


def test_per_sample_masks_independent():
  rng = np.random.default_rng(4)
  f = jnp.asarray(rng.standard_normal((2, 16, 16, 3)).astype(np.float32))
  mask = _random_masks(rng, 2, 16, 16)
  ca = jax.jit(contextual_attention)
  y_both, _ = ca(f, f, jnp.asarray(mask))
  y0, _ = ca(f[:1], f[:1], jnp.asarray(mask[:1]))
  y1, _ = ca(f[1:], f[1:], jnp.asarray(mask[1:]))
  np.testing.assert_allclose(np.asarray(y_both), np.concatenate([y0, y1]), rtol=1e-5, atol=1e-5)


def test_gradients_finite():
  rng = np.random.default_rng(5)
  f = jnp.asarray(rng.standard_normal((2, 16, 16, 4)).astype(np.float32))
  b = jnp.asarray(rng.standard_normal((2, 16, 16, 4)).astype(np.float32))
  # sample 1: everything masked but one corner -> degenerate softmax rows
  mask = np.zeros((2, 16, 16, 1), np.float32)
  mask[0, 4:10, 5:12] = 1.0
  mask[1, :12, :] = 1.0
  r = jnp.asarray(rng.standard_normal((2, 16, 16, 4)).astype(np.float32))

  @jax.jit
  def loss(f, b):
    y, _ = contextual_attention(f, b, jnp.asarray(mask))
    return jnp.sum(y * r)

  gf, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(f, b)
  assert np.all(np.isfinite(gf)) and np.all(np.isfinite(gb))
  assert np.abs(np.asarray(gf)).sum() > 0 and np.abs(np.asarray(gb)).sum() > 0
  # zero background patches (norm clamp) must not produce NaN either
  gz = jax.jit(jax.grad(loss, argnums=(0, 1)))(f, jnp.zeros_like(b))[1]
  assert np.all(np.isfinite(gz))
  # directional derivatives vs central differences (moderate feature scale so the
  # scaled softmax is smooth at the step size)
  fs, bs_ = 0.3 * f, 0.3 * b
  gfs, gbs = jax.jit(jax.grad(loss, argnums=(0, 1)))(fs, bs_)
  for arg, g in ((0, gfs), (1, gbs)):
    d = jnp.asarray(rng.standard_normal(f.shape).astype(np.float32))
    d = d / jnp.linalg.norm(d)
    eps = 1e-2
    if arg == 0:
      num = (loss(fs + eps * d, bs_) - loss(fs - eps * d, bs_)) / (2 * eps)
    else:
      num = (loss(fs, bs_ + eps * d) - loss(fs, bs_ - eps * d)) / (2 * eps)
    ana = float(jnp.sum(g * d))
    assert abs(float(num) - ana) <= 1e-2 * max(1.0, abs(ana)), (arg, float(num), ana)


def test_bfloat16_input_keeps_dtype():
  rng = np.random.default_rng(6)
  f = jnp.asarray(rng.standard_normal((1, 16, 16, 4)).astype(np.float32))
  y32, _ = contextual_attention(f, f)
  y16, flow = contextual_attention(f.astype(jnp.bfloat16), f.astype(jnp.bfloat16))
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), atol=0.1, rtol=0.1)
  assert flow.dtype == jnp.float32


def test_flow_image_colours():
  flow = np.zeros((1, 3, 3, 2), np.float32)
  flow[0, 0, 0] = (0, 4)  # right
  flow[0, 0, 1] = (0, -4)  # left
  flow[0, 0, 2] = (4, 0)  # down
  flow[0, 1, 0] = (0, 2)  # right, half magnitude
  img = np.asarray(flow_to_image(jnp.asarray(flow)))
  assert img.shape == (1, 3, 3, 3)
  assert img.min() >= -1.0 and img.max() <= 1.0
  np.testing.assert_allclose(img[0, 2, 2], [1.0, 1.0, 1.0], atol=1e-6)  # zero flow -> white
  assert not np.allclose(img[0, 0, 0], img[0, 0, 1])  # opposite directions differ
  assert not np.allclose(img[0, 0, 0], img[0, 0, 2])
  # same direction, smaller magnitude -> closer to white
  assert np.all(img[0, 1, 0] >= img[0, 0, 0] - 1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        dict(f=(2, 16, 16, 4), b=(2, 16, 16, 4), m=(1, 16, 16, 1)),
        dict(f=(2, 16, 16, 4), b=(2, 16, 16, 3), m=None),
        dict(f=(16, 16, 4), b=(2, 16, 16, 4), m=None),
    ],
)
def test_bad_shapes_raise(bad):
  f = jnp.zeros(bad["f"])
  b = jnp.zeros(bad["b"])
  m = None if bad["m"] is None else jnp.zeros(bad["m"])
  with pytest.raises(ValueError, match="shape"):
    contextual_attention(f, b, m)
