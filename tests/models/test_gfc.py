"""GFC generator: max-(un)pooling and forward pass against a PyTorch twin, composition,
input checks, gradients, and the GFC step builder (models/completion_baselines.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.nn import functional as F

from deocc_jax.data.face_parsing import parsing_labels_jax
from deocc_jax.models.completion_baselines import make_gfc_fns
from deocc_jax.models.face_parser import FaceParser
from deocc_jax.models.generator import complete
from deocc_jax.models.gfc import (
    GFCGenerator,
    max_pool_with_switches,
    max_unpool,
    noise_fill,
)
from tests.helpers.torch_reference import (
    TorchGFC,
    load_flax_params_,
    nhwc_to_torch,
    torch_to_nhwc,
)

BASE = 4


def _inputs(seed: int, b: int, h: int, w: int):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32)
  m = np.zeros((b, h, w, 1), np.float32)
  for n in range(b):
    t, l = rng.integers(0, h // 2), rng.integers(0, w // 2)
    m[n, t : t + h // 3 + n, l : l + w // 3 + 1] = 1.0
  return x, m


def randomise(params, seed: int):
  """He-normal kernels and N(0, 0.1) biases, so every layer (the 0.001-std
  output layer included) carries O(1) signal in the parity test."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if path[-1].key == "kernel":
      return rng.normal(0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
    return rng.normal(0, 0.1, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, params)


def test_max_pool_and_unpool_match_torch_including_ties():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 8, 6, 3)).astype(np.float32)
  x = np.maximum(x, 0.0)  # ReLU zeros: whole windows of ties
  x[0, 0:2, 0:2, 0] = 0.5  # a four-way tie of a positive value
  y = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
  pooled, sw = jax.jit(max_pool_with_switches)(jnp.asarray(x))
  unpooled = jax.jit(max_unpool)(jnp.asarray(y), sw)
  tp, idx = F.max_pool2d(nhwc_to_torch(x), 2, 2, return_indices=True)
  tu = F.max_unpool2d(nhwc_to_torch(y), idx, 2, 2)
  np.testing.assert_array_equal(np.asarray(pooled), torch_to_nhwc(tp).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(unpooled), torch_to_nhwc(tu).astype(np.float32))
  assert np.asarray(sw)[0, 0, 0, 0] == 0  # first maximum wins a tie


@pytest.mark.parametrize("hw,use_fill", [((32, 32), False), ((16, 32), True)])
def test_forward_matches_torch_twin(hw, use_fill):
  x, m = _inputs(1, 2, *hw)
  model = GFCGenerator(base=BASE)
  params = randomise(jax.eval_shape(model.init, jax.random.PRNGKey(0), x, m)["params"], seed=2)
  fill = np.asarray(noise_fill(jax.random.PRNGKey(3), jnp.asarray(x))) if use_fill else None
  got = np.asarray(jax.jit(model.apply)({"params": params}, x, m, fill))
  twin = load_flax_params_(TorchGFC(BASE, hw), params)
  with torch.no_grad():
    want = torch_to_nhwc(
        twin(nhwc_to_torch(x), nhwc_to_torch(m), None if fill is None else nhwc_to_torch(fill))
    )
  assert got.shape == x.shape and got.dtype == np.float32
  assert 0.05 < np.mean(np.abs(want)) and np.mean(np.abs(want) < 1.0) > 0.2  # a real signal
  err = np.max(np.abs(got - want))
  assert err < 1e-5, err


def test_fill_changes_only_through_the_hole():
  x, m = _inputs(4, 2, 16, 16)
  model = GFCGenerator(base=BASE)
  params = randomise(jax.eval_shape(model.init, jax.random.PRNGKey(0), x, m)["params"], seed=5)
  apply = jax.jit(model.apply)
  fill = np.random.default_rng(6).uniform(-1, 1, x.shape).astype(np.float32)
  a = np.asarray(apply({"params": params}, x, m, fill))
  # a different fill outside the hole must not matter; inside it must
  fill2 = np.where(m > 0, fill, -fill)
  np.testing.assert_array_equal(a, np.asarray(apply({"params": params}, x, m, fill2)))
  assert np.max(np.abs(a - np.asarray(apply({"params": params}, x, m, -fill)))) > 1e-3
  # the occluder's pixels (the masked image inside the hole) are never seen
  x2 = np.where(m > 0, 0.3, x)
  np.testing.assert_array_equal(a, np.asarray(apply({"params": params}, x2, m, fill)))


def test_completion_keeps_known_pixels_exactly():
  x, m = _inputs(7, 3, 16, 16)
  model = GFCGenerator(base=BASE)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x, m)
  out = jax.jit(model.apply)(params, x, m)
  comp = np.asarray(complete(jnp.asarray(x), jnp.asarray(m), out))
  known = np.broadcast_to(m == 0, x.shape)
  np.testing.assert_array_equal(comp[known], x[known])
  np.testing.assert_array_equal(comp[~known], np.asarray(out)[~known])


@pytest.mark.parametrize(
    "xs,ms,match",
    [
        ((2, 24, 32, 3), (2, 24, 32, 1), "divisible by 16"),
        ((2, 8, 8, 3), (2, 8, 8, 1), "divisible by 16"),
        ((2, 16, 16, 4), (2, 16, 16, 1), r"\(B, H, W, 3\)"),
        ((2, 16, 16, 3), (2, 16, 16, 3), "mask must have shape"),
        ((2, 16, 16, 3), (1, 16, 16, 1), "mask must have shape"),
    ],
)
def test_bad_shapes_are_refused(xs, ms, match):
  with pytest.raises(ValueError, match=match):
    GFCGenerator(base=BASE).init(jax.random.PRNGKey(0), jnp.zeros(xs), jnp.zeros(ms))


def test_default_bottleneck_and_resolution_tied_parameters():
  x, m = _inputs(8, 1, 32, 16)
  params = jax.jit(GFCGenerator(base=BASE).init)(jax.random.PRNGKey(0), x, m)["params"]
  flat = (32 // 16) * (16 // 16) * 8 * BASE
  assert params["fc"]["kernel"].shape == (flat, flat // 4)
  assert params["defc"]["kernel"].shape == (flat // 4, flat)
  p2 = jax.eval_shape(GFCGenerator(base=BASE, fc_dim=5).init, jax.random.PRNGKey(0), x, m)["params"]
  assert p2["fc"]["kernel"].shape == (flat, 5)
  # initialisation: the output layer starts near zero, as in the release
  assert float(jnp.std(params["out"]["kernel"])) < 3e-3


def test_gradients_are_finite_and_reach_every_layer():
  x, m = _inputs(9, 2, 16, 16)
  y = np.random.default_rng(10).uniform(-1, 1, x.shape).astype(np.float32)
  model = GFCGenerator(base=BASE)
  params = randomise(jax.eval_shape(model.init, jax.random.PRNGKey(0), x, m)["params"], seed=11)
  grads = jax.jit(jax.grad(lambda p: jnp.mean((model.apply({"params": p}, x, m) - y) ** 2)))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    if path[-1].key == "kernel":
      assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


@pytest.fixture(scope="module")
def gfc_run():
  r = 16
  x, m = _inputs(12, 2, r, r)
  y = np.where(m > 0, np.random.default_rng(13).uniform(-1, 1, x.shape), x).astype(np.float32)
  lm = np.array([[5.0, 6], [10, 6], [7.5, 9], [5.5, 12], [9.5, 12]], np.float32)
  batch = {
      "masked": jnp.asarray(x),
      "mask": jnp.asarray(m),
      "clean": jnp.asarray(y),
      "parsing": parsing_labels_jax(np.stack([lm, lm + 0.5]), r, r),
  }
  parser = FaceParser(width=4)
  pp = jax.jit(parser.init)(jax.random.PRNGKey(1), jnp.zeros((1, r, r, 3)))["params"]
  fns = make_gfc_fns(r, optax.adam(2e-3), optax.adam(2e-3), base=BASE, critic_cnum=4, parser=parser)
  return fns, jax.jit(fns.init)(jax.random.PRNGKey(2), pp), batch, parser


def test_gfc_generator_steps_lower_the_loss_and_leave_the_rest(gfc_run):
  fns, state, batch, _ = gfc_run
  step = jax.jit(fns.generator_step)
  key = jax.random.PRNGKey(3)
  losses = []
  s = state
  for _ in range(3):
    s, metrics = step(s, batch, key)
    losses.append(float(metrics["loss/g_total"]))
  assert all(np.isfinite(losses)) and losses[2] < losses[0], losses
  assert float(metrics["grad_norm/g"]) > 0 and int(s["step"]) == 3
  for name in ("d", "frozen"):
    for a, b in zip(jax.tree.leaves(state[name]), jax.tree.leaves(s[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for k in ("reconstruction", "adv_local", "adv_global", "parsing"):
    assert np.isfinite(float(metrics[f"loss/g_{k}"])) and float(metrics[f"loss/g_{k}"]) > 0
  comp = np.asarray(fns.complete(s["g"], batch["masked"], batch["mask"]))
  known = np.broadcast_to(np.asarray(batch["mask"]) == 0, comp.shape)
  np.testing.assert_array_equal(comp[known], np.asarray(batch["masked"])[known])


def test_gfc_critic_steps_lower_the_critic_loss(gfc_run):
  fns, state, batch, _ = gfc_run
  step = jax.jit(fns.critic_step)
  key = jax.random.PRNGKey(4)
  s, m0 = step(state, batch, key)
  s, _ = step(s, batch, key)
  s, m2 = step(s, batch, key)
  assert float(m2["loss/d_total"]) < float(m0["loss/d_total"])
  for a, b in zip(jax.tree.leaves(state["g"]), jax.tree.leaves(s["g"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _ce(logits, labels):
  z = np.asarray(logits, np.float64)
  lse = np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1)) + z.max(-1)
  return float(np.mean(lse - np.take_along_axis(z, np.asarray(labels)[..., None], -1)[..., 0]))


def test_gfc_parsing_term_uses_the_chosen_target(gfc_run):
  fns, state, batch, parser = gfc_run
  key = jax.random.PRNGKey(0)  # the key fns.complete fills the hole with
  comp = fns.complete(state["g"], batch["masked"], batch["mask"])
  logits = parser.apply({"params": state["frozen"]}, comp)
  _, metrics = jax.jit(fns.generator_step)(state, batch, key)
  np.testing.assert_allclose(
      float(metrics["loss/g_parsing"]), _ce(logits, batch["parsing"]), rtol=1e-5
  )
  tx = optax.adam(2e-3)
  release = make_gfc_fns(
      16, tx, tx, base=BASE, critic_cnum=4, parser=parser, parsing_target="parser"
  )
  _, metrics = jax.jit(release.generator_step)(state, batch, key)
  own = jnp.argmax(parser.apply({"params": state["frozen"]}, batch["clean"]), -1)
  np.testing.assert_allclose(float(metrics["loss/g_parsing"]), _ce(logits, own), rtol=1e-5)


def test_gfc_builder_refuses_unknown_targets():
  with pytest.raises(ValueError, match="parsing_target"):
    make_gfc_fns(16, optax.sgd(0.1), optax.sgd(0.1), parsing_target="landmarks")
