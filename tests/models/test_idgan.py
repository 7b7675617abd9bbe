"""IDGAN-style generator: forward pass against a PyTorch twin, composition, input
checks, gradients, and the IDGAN step builder (models/completion_baselines.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from deocc_jax.models.completion_baselines import make_idgan_fns
from deocc_jax.models.generator import complete
from deocc_jax.models.idgan import IDGANGenerator
from tests.helpers.torch_reference import (
    TorchIDGAN,
    load_flax_params_,
    nhwc_to_torch,
    torch_to_nhwc,
)

BASE = 4
EMB = 8


def _inputs(seed: int, b: int, h: int, w: int):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32)
  m = np.zeros((b, h, w, 1), np.float32)
  for n in range(b):
    t, l = rng.integers(0, h // 2), rng.integers(0, w // 2)
    m[n, t : t + h // 3 + n, l : l + w // 3 + 1] = 1.0
  return x, m


def randomise(params, seed: int):
  """He-normal kernels (fan-in of the kernel's input side) and N(0, 0.1) biases."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if path[-1].key == "kernel":
      return rng.normal(0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
    return rng.normal(0, 0.1, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, params)


def _shapes(model, x, m):
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), x, m)["params"]


@pytest.mark.parametrize("hw", [(16, 16), (20, 12)])
def test_forward_matches_torch_twin(hw):
  x, m = _inputs(1, 2, *hw)
  model = IDGANGenerator(base=BASE)
  params = randomise(_shapes(model, x, m), seed=2)
  got = np.asarray(jax.jit(model.apply)({"params": params}, x, m))
  twin = load_flax_params_(TorchIDGAN(BASE), params)
  with torch.no_grad():
    want = torch_to_nhwc(twin(nhwc_to_torch(x), nhwc_to_torch(m)))
  assert got.shape == x.shape and got.dtype == np.float32
  assert np.std(want) > 0.03  # a real signal, not a dead output
  err = np.max(np.abs(got - want))
  assert err < 1e-5, err


def test_occluder_pixels_are_never_seen_and_known_pixels_kept():
  x, m = _inputs(3, 3, 16, 16)
  model = IDGANGenerator(base=BASE)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x, m)
  apply = jax.jit(model.apply)
  out = apply(params, x, m)
  np.testing.assert_array_equal(
      np.asarray(out), np.asarray(apply(params, np.where(m > 0, 0.7, x), m))
  )
  comp = np.asarray(complete(jnp.asarray(x), jnp.asarray(m), out))
  known = np.broadcast_to(m == 0, x.shape)
  np.testing.assert_array_equal(comp[known], x[known])
  np.testing.assert_array_equal(comp[~known], np.asarray(out)[~known])
  assert np.all(np.abs(np.asarray(out)) <= 1.0)


@pytest.mark.parametrize(
    "xs,ms,base,match",
    [
        ((2, 18, 16, 3), (2, 18, 16, 1), BASE, "divisible by 4"),
        ((2, 16, 16, 1), (2, 16, 16, 1), BASE, r"\(B, H, W, 3\)"),
        ((2, 16, 16, 3), (2, 16, 8, 1), BASE, "mask must have shape"),
        ((2, 16, 16, 3), (2, 16, 16, 1), 5, "base must be even"),
    ],
)
def test_bad_shapes_are_refused(xs, ms, base, match):
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(
        IDGANGenerator(base=base).init, jax.random.PRNGKey(0), jnp.zeros(xs), jnp.zeros(ms)
    )


def test_gradients_are_finite_and_reach_every_layer():
  x, m = _inputs(4, 2, 16, 16)
  y = np.random.default_rng(5).uniform(-1, 1, x.shape).astype(np.float32)
  model = IDGANGenerator(base=BASE)
  params = randomise(_shapes(model, x, m), seed=6)
  grads = jax.jit(jax.grad(lambda p: jnp.mean(jnp.abs(model.apply({"params": p}, x, m) - y))))(
      params
  )
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    if path[-1].key == "kernel":
      assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def _embed(w, images):
  """A frozen linear 'recogniser': flattened image @ w."""
  return images.reshape(images.shape[0], -1) @ w


@pytest.fixture(scope="module")
def idgan_run():
  r = 16
  x, m = _inputs(7, 4, r, r)
  y = np.where(m > 0, np.random.default_rng(8).uniform(-1, 1, x.shape), x).astype(np.float32)
  w = np.random.default_rng(9).normal(0, 0.05, (r * r * 3, EMB)).astype(np.float32)
  batch = {
      "masked": jnp.asarray(x),
      "mask": jnp.asarray(m),
      "clean": jnp.asarray(y),
      "identity": jnp.asarray([0, 1, 0, 2], jnp.int32),
      "identity_center": jnp.asarray(np.random.default_rng(10).normal(size=(4, EMB)), jnp.float32),
  }
  tx = optax.adam(2e-3)
  fns = make_idgan_fns(r, tx, tx, _embed, base=BASE, critic_cnum=4)
  return fns, jax.jit(fns.init)(jax.random.PRNGKey(1), jnp.asarray(w)), batch


def test_idgan_generator_steps_lower_the_loss(idgan_run):
  fns, state, batch = idgan_run
  step = jax.jit(fns.generator_step)
  s, losses = state, []
  for i in range(3):
    s, metrics = step(s, batch, jax.random.PRNGKey(i))
    losses.append(float(metrics["loss/g_total"]))
  assert all(np.isfinite(losses)) and losses[2] < losses[0], losses
  assert float(metrics["loss/g_identity"]) > 0 and float(metrics["grad_norm/g"]) > 0
  for name in ("d", "frozen"):
    for a, b in zip(jax.tree.leaves(state[name]), jax.tree.leaves(s[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  comp = np.asarray(jax.jit(fns.complete)(s["g"], batch["masked"], batch["mask"]))
  known = np.broadcast_to(np.asarray(batch["mask"]) == 0, comp.shape)
  np.testing.assert_array_equal(comp[known], np.asarray(batch["masked"])[known])


def test_idgan_identity_term_uses_the_chosen_target(idgan_run):
  fns, state, batch = idgan_run
  comp = fns.complete(state["g"], batch["masked"], batch["mask"])
  emb = np.asarray(_embed(state["frozen"], comp), np.float64)

  def one_minus_cos(a, b):
    return np.mean(1 - np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))

  _, m_clean = jax.jit(fns.generator_step)(state, batch, jax.random.PRNGKey(0))
  want = one_minus_cos(emb, np.asarray(_embed(state["frozen"], batch["clean"]), np.float64))
  np.testing.assert_allclose(float(m_clean["loss/g_identity"]), want, rtol=1e-4, atol=1e-6)
  tx = optax.adam(2e-3)
  centre = make_idgan_fns(16, tx, tx, _embed, base=BASE, critic_cnum=4, identity_target="center")
  _, m_centre = jax.jit(centre.generator_step)(state, batch, jax.random.PRNGKey(0))
  want = one_minus_cos(emb, np.asarray(batch["identity_center"], np.float64))
  np.testing.assert_allclose(float(m_centre["loss/g_identity"]), want, rtol=1e-4, atol=1e-6)


def test_idgan_critic_steps_lower_the_critic_loss(idgan_run):
  fns, state, batch = idgan_run
  step = jax.jit(fns.critic_step)
  s, m0 = step(state, batch, jax.random.PRNGKey(0))
  s, _ = step(s, batch, jax.random.PRNGKey(1))
  s, m2 = step(s, batch, jax.random.PRNGKey(2))
  assert float(m2["loss/d_total"]) < float(m0["loss/d_total"])
  for a, b in zip(jax.tree.leaves(state["g"]), jax.tree.leaves(s["g"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_idgan_builder_refuses_unknown_targets():
  with pytest.raises(ValueError, match="identity_target"):
    make_idgan_fns(16, optax.sgd(0.1), optax.sgd(0.1), _embed, identity_target="mean")
