"""DeepFill v1 generator and reconstruction losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.losses.reconstruction import (
    deepfill_reconstruction_loss,
    l1_loss,
    reconstruction_loss,
    spatial_discounting_weights,
)
from deocc_jax.models.generator import InpaintGenerator, complete

CNUM = 4


def _inputs(rng, b, h, w):
  x = rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32)
  m = np.zeros((b, h, w, 1), np.float32)
  for n in range(b):
    t, l = rng.integers(0, h // 2), rng.integers(0, w // 2)
    m[n, t : t + h // 3 + n, l : l + w // 4 + 2 * n] = 1.0
  return jnp.asarray(x), jnp.asarray(m)


@pytest.fixture(scope="module")
def model_and_params():
  model = InpaintGenerator(cnum=CNUM)
  x, m = _inputs(np.random.default_rng(0), 2, 32, 32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x, m)
  return model, params


@pytest.fixture(scope="module")
def apply_fn(model_and_params):
  model, _ = model_and_params
  return jax.jit(model.apply)


@pytest.mark.parametrize("hw", [(32, 32), (48, 40), (36, 44)])
def test_shapes_and_range(model_and_params, apply_fn, hw):
  # parameters do not depend on the resolution (fully convolutional)
  _, params = model_and_params
  x, m = _inputs(np.random.default_rng(1), 2, *hw)
  out = apply_fn(params, x, m)
  for a in (out.coarse, out.refined, out.flow):
    assert a.shape == x.shape and a.dtype == jnp.float32
    assert np.all(np.isfinite(a))
    assert float(jnp.min(a)) >= -1.0 and float(jnp.max(a)) <= 1.0


@pytest.mark.parametrize("shape", [(2, 34, 32, 3), (2, 32, 30, 3), (2, 4, 4, 3)])
def test_bad_resolution_raises(model_and_params, shape):
  model, params = model_and_params
  x = jnp.zeros(shape)
  m = jnp.zeros(shape[:3] + (1,))
  with pytest.raises(ValueError, match=r"divisible by 4.*\(2, "):
    model.apply(params, x, m)


def test_bad_mask_raises(model_and_params):
  model, params = model_and_params
  with pytest.raises(ValueError, match="mask must have shape"):
    model.apply(params, jnp.zeros((2, 32, 32, 3)), jnp.zeros((2, 32, 32, 3)))


def test_architecture_param_shapes(model_and_params):
  _, params = model_and_params
  p = params["params"]
  k = lambda name: p[name]["conv"]["kernel"].shape  # noqa: E731
  c = CNUM
  assert k("conv1") == (5, 5, 5, c)  # [x*(1-M), ones, M]
  assert k("conv4_downsample") == (3, 3, 2 * c, 4 * c)
  assert k("conv10_atrous") == (3, 3, 4 * c, 4 * c)
  assert p["conv13_upsample"]["conv"]["conv"]["kernel"].shape == (3, 3, 4 * c, 2 * c)
  assert k("conv16") == (3, 3, c, c // 2)
  assert k("conv17") == (3, 3, c // 2, 3)
  assert k("xconv1") == (5, 5, 5, c)
  assert k("xconv2_downsample") == (3, 3, c, c)
  assert k("pmconv6") == (3, 3, 4 * c, 4 * c)
  assert k("allconv11") == (3, 3, 8 * c, 4 * c)  # concat of both branches
  assert k("allconv17") == (3, 3, c // 2, 3)
  n_convs = len(p)
  assert n_convs == 17 + 10 + 8 + 7, sorted(p)


def test_dilation_rates_in_graph(model_and_params):
  model, params = model_and_params
  x, m = _inputs(np.random.default_rng(2), 1, 64, 64)
  jaxpr = jax.make_jaxpr(model.apply)(params, x, m)
  rates = []
  for eqn in jaxpr.jaxpr.eqns:
    if eqn.primitive.name == "pjit":
      inner = eqn.params["jaxpr"].jaxpr.eqns
    else:
      inner = [eqn]
    for e in inner:
      if e.primitive.name == "conv_general_dilated":
        rates.append(tuple(e.params["rhs_dilation"]))
  for r in (2, 4, 8, 16):
    assert rates.count((r, r)) == 2, rates  # coarse + refinement dilated branch
  assert len(rates) == 42


def test_hole_content_is_ignored(model_and_params, apply_fn):
  _, params = model_and_params
  rng = np.random.default_rng(3)
  x, m = _inputs(rng, 2, 32, 32)
  noise = jnp.asarray(rng.uniform(-1, 1, x.shape).astype(np.float32))
  x2 = x * (1 - m) + noise * m
  a = apply_fn(params, x, m)
  b = apply_fn(params, x2, m)
  np.testing.assert_allclose(np.asarray(a.refined), np.asarray(b.refined), atol=1e-6)
  # ...but the observed pixels matter
  c = apply_fn(params, x * 0.5, m)
  assert float(jnp.max(jnp.abs(c.refined - a.refined))) > 1e-4


def test_complete_composite():
  rng = np.random.default_rng(4)
  x, m = _inputs(rng, 2, 16, 16)
  g = jnp.asarray(rng.uniform(-1, 1, x.shape).astype(np.float32))
  out = np.asarray(complete(x, m, g))
  mm = np.asarray(m)[..., 0] > 0.5
  np.testing.assert_array_equal(out[mm], np.asarray(g)[mm])
  np.testing.assert_array_equal(out[~mm], np.asarray(x)[~mm])


def test_gradients_reach_all_layers(model_and_params):
  model, params = model_and_params
  x, m = _inputs(np.random.default_rng(5), 2, 32, 32)

  # targets at 0.5 scale: coarse/refined stay unclipped enough to pass gradient
  def loss(p):
    out = model.apply(p, x * 0.5, m)
    return deepfill_reconstruction_loss(x * 0.5, out.coarse, out.refined, m)["total"]

  g = jax.jit(jax.grad(loss))(params)
  leaves = jax.tree_util.tree_leaves_with_path(g)
  for path, leaf in leaves:
    assert np.all(np.isfinite(leaf)), path
  kernels = {
      jax.tree_util.keystr(pth): float(jnp.abs(l).sum())
      for pth, l in leaves
      if "kernel" in jax.tree_util.keystr(pth)
  }
  zero = [k for k, v in kernels.items() if v == 0.0]
  assert not zero, zero  # includes pmconv* (attention branch) layers


def test_bfloat16_compute(model_and_params, apply_fn):
  _, params = model_and_params
  x, m = _inputs(np.random.default_rng(6), 2, 32, 32)
  out32 = apply_fn(params, x, m)
  out16 = jax.jit(InpaintGenerator(cnum=CNUM, dtype=jnp.bfloat16).apply)(params, x, m)
  assert out16.refined.dtype == jnp.float32
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a: a.dtype == jnp.float32, params))
  err = float(jnp.max(jnp.abs(out16.refined - out32.refined)))
  assert err < 0.01, err  # outputs in [-1, 1]; measured 0.0031 (bf16's step: 2^-8)


# ---------------------------------------------------------------------------
# Reconstruction losses vs float64 loop references.
# ---------------------------------------------------------------------------


def _ref_discount(mask: np.ndarray, gamma: float) -> np.ndarray:
  b, h, w, _ = mask.shape
  out = np.zeros(mask.shape, np.float64)
  for n in range(b):
    known = [(i, j) for i in range(h) for j in range(w) if mask[n, i, j, 0] <= 0.5]
    for i in range(h):
      for j in range(w):
        if mask[n, i, j, 0] > 0.5:
          if known:
            d = min(max(abs(i - a), abs(j - c)) for a, c in known)
          else:
            d = max(h, w)
          out[n, i, j, 0] = gamma**d
  return out


def _random_mask(rng, b, h, w):
  m = np.zeros((b, h, w, 1), np.float32)
  for n in range(b):
    for _ in range(2):
      th, tw = rng.integers(1, h // 2 + 1), rng.integers(1, w // 2 + 1)
      t, l = rng.integers(0, h - th + 1), rng.integers(0, w - tw + 1)
      m[n, t : t + th, l : l + tw] = 1.0
  m[-1, 0, :4] = 1.0  # touches the border
  return m


def test_spatial_discounting_matches_loops():
  rng = np.random.default_rng(7)
  m = _random_mask(rng, 3, 17, 12)
  m = np.concatenate([m, np.ones((1, 17, 12, 1), np.float32)])  # fully masked sample
  got = np.asarray(jax.jit(spatial_discounting_weights)(jnp.asarray(m)))
  np.testing.assert_allclose(got, _ref_discount(m, 0.9), rtol=1e-5, atol=1e-7)


def test_spatial_discounting_box_vs_deepfill_formula():
  # For a box hole, gamma**d equals DeepFill's max(g**min(i,H-i), g**min(j,W-j)) on
  # the bottom/right half, and is one power of gamma smaller on the top/left half.
  hh, ww, g = 8, 10, 0.9
  m = np.zeros((1, 14, 16, 1), np.float32)
  m[0, 3 : 3 + hh, 4 : 4 + ww] = 1.0
  got = np.asarray(spatial_discounting_weights(jnp.asarray(m), g))[0, 3 : 3 + hh, 4 : 4 + ww, 0]
  for i in range(hh):
    for j in range(ww):
      official = max(g ** min(i, hh - i), g ** min(j, ww - j))
      ours = g ** min(i + 1, hh - i, j + 1, ww - j)
      assert got[i, j] == pytest.approx(ours, rel=1e-6)
      if i >= hh // 2 and j >= ww // 2:
        assert got[i, j] == pytest.approx(official, rel=1e-6)


def test_deepfill_loss_matches_loops():
  rng = np.random.default_rng(8)
  b, h, w = 2, 12, 10
  m = _random_mask(rng, b, h, w)
  y, c1, c2 = (rng.uniform(-1, 1, (b, h, w, 3)) for _ in range(3))
  wts = _ref_discount(m, 0.9)
  l1n = l1d = aen = aed = 0.0
  l1_c1 = l1_c2 = ae_c1 = ae_c2 = 0.0
  for n in range(b):
    for i in range(h):
      for j in range(w):
        hole = m[n, i, j, 0] > 0.5
        for ch in range(3):
          e1 = abs(y[n, i, j, ch] - c1[n, i, j, ch])
          e2 = abs(y[n, i, j, ch] - c2[n, i, j, ch])
          if hole:
            l1_c1 += wts[n, i, j, 0] * e1
            l1_c2 += wts[n, i, j, 0] * e2
            l1d += 1
          else:
            ae_c1 += e1
            ae_c2 += e2
            aed += 1
  l1 = (1.2 * l1_c1 + l1_c2) / l1d
  ae = (1.2 * ae_c1 + ae_c2) / aed
  f32 = lambda a: jnp.asarray(np.float32(a))  # noqa: E731
  got = deepfill_reconstruction_loss(f32(y), f32(c1), f32(c2), jnp.asarray(m))
  assert float(got["l1"]) == pytest.approx(l1, rel=1e-5)
  assert float(got["ae"]) == pytest.approx(ae, rel=1e-5)
  assert float(got["total"]) == pytest.approx(1.2 * l1 + 1.2 * ae, rel=1e-5)
  tot, terms = reconstruction_loss("deepfill", f32(y), f32(c1), f32(c2), jnp.asarray(m))
  assert float(tot) == pytest.approx(1.2 * l1 + 1.2 * ae, rel=1e-5)
  # plain L1 (Eq. 7) on the refined output only
  ref = np.mean(np.abs(y - c2))
  tot, _ = reconstruction_loss("l1", f32(y), f32(c1), f32(c2), jnp.asarray(m))
  assert float(tot) == pytest.approx(ref, rel=1e-5)
  assert float(l1_loss(f32(c2), f32(y))) == pytest.approx(ref, rel=1e-5)


def test_reconstruction_loss_bad_kind():
  z = jnp.zeros((1, 8, 8, 3))
  with pytest.raises(ValueError, match="kind"):
    reconstruction_loss("l2", z, z, z, jnp.zeros((1, 8, 8, 1)))


# ---------------------------------------------------------------------------
# Cross-check against the PyTorch timing twin in benchmarks/ (independent conv /
# padding / unfold-fold code path), with the same weights.
# ---------------------------------------------------------------------------


def _load_torch_twin():
  from tests.helpers import torch_reference  # the test extra installs torch: missing, this fails

  twin = torch_reference.deepfill_twin()
  return twin[0], twin


def test_generator_matches_torch_twin(model_and_params, apply_fn):
  torch, (_, _, TorchGenerator, _) = _load_torch_twin()
  model, params = model_and_params
  p = params["params"]
  tg = TorchGenerator(CNUM)

  def kernel(name):
    q = p[name]["conv"]
    q = q["conv"] if "conv" in q else q
    return q["kernel"], q["bias"]

  names = {
      "coarse": [
          "conv1",
          "conv2_downsample",
          "conv3",
          "conv4_downsample",
          "conv5",
          "conv6",
          "conv7_atrous",
          "conv8_atrous",
          "conv9_atrous",
          "conv10_atrous",
          "conv11",
          "conv12",
      ],
      "coarse_dec": ["conv13_upsample", "conv14", "conv15_upsample", "conv16"],
      "hallu": [
          "xconv1",
          "xconv2_downsample",
          "xconv3",
          "xconv4_downsample",
          "xconv5",
          "xconv6",
          "xconv7_atrous",
          "xconv8_atrous",
          "xconv9_atrous",
          "xconv10_atrous",
      ],
      "pm": ["pmconv1", "pmconv2_downsample", "pmconv3", "pmconv4_downsample", "pmconv5"],
      "pm_after": ["pmconv9", "pmconv10"],
      "all": ["allconv11", "allconv12"],
      "all_dec": ["allconv13_upsample", "allconv14", "allconv15_upsample", "allconv16"],
  }
  singles = {"coarse_out": "conv17", "pm6": "pmconv6", "all_out": "allconv17"}

  def load(tconv, name):
    k, b = kernel(name)
    assert tuple(tconv.conv.weight.shape) == (k.shape[3], k.shape[2], k.shape[0], k.shape[1])
    with torch.no_grad():
      tconv.conv.weight.copy_(torch.tensor(np.asarray(k)).permute(3, 2, 0, 1))
      tconv.conv.bias.copy_(torch.tensor(np.asarray(b)))

  for attr, lst in names.items():
    for tconv, name in zip(getattr(tg, attr), lst, strict=True):
      load(tconv, name)
  for attr, name in singles.items():
    load(getattr(tg, attr), name)

  x, m = _inputs(np.random.default_rng(9), 2, 32, 40)
  out = apply_fn(params, x, m)
  with torch.no_grad():
    tc, tr = tg(
        torch.tensor(np.asarray(x)).permute(0, 3, 1, 2),
        torch.tensor(np.asarray(m)).permute(0, 3, 1, 2),
    )
  np.testing.assert_allclose(np.asarray(out.coarse), tc.permute(0, 2, 3, 1).numpy(), atol=2e-5)
  np.testing.assert_allclose(np.asarray(out.refined), tr.permute(0, 2, 3, 1).numpy(), atol=2e-5)
