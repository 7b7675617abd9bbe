"""The de-occlusion objectives: DeepFill v1's (the paper config's G) and Eq. 7-8.

DeepFill v1 (official ``inpaint_model.py``): WGAN-GP on the global AND local
critics with the gradient penalty masked to the hole for both, discounted hole
L1 + known-region L1 on the coarse and refined outputs with configurable
weights, five critic updates per generator update, Adam 1e-4 (0.5, 0.9).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from deocc_jax.configs import base as synthetic  # noqa: E402  (configs/synthetic.py's body)
from deocc_jax.configs import paper as paper_celeba  # noqa: E402  (configs/paper_celeba.py's body)
from deocc_jax.losses import adversarial as adv
from deocc_jax.losses.reconstruction import deepfill_reconstruction_loss
from deocc_jax.models.critics import crop_hole_boxes
from deocc_jax.runs import builders
from deocc_jax.training import deocclusion_stage
from tests.helpers.configs import tiny_config

RES, LOCAL = 32, 16


def _cfg(**kw) -> ConfigDict:
  return tiny_config(deocclusion={"local_size": LOCAL, **kw}).deocclusion


def _irregular_masks() -> np.ndarray:
  """Non-rectangular holes: the local patch (the hole's bounding box) then
  holds known pixels too, so a penalty 'restricted to the hole' must weight them 0."""
  m = np.zeros((2, RES, RES, 1), np.float32)
  m[0, 4:20, 6:10] = 1
  m[0, 16:20, 6:26] = 1  # an L shape
  m[1, 10:14, 2:30] = 1
  m[1, 6:26, 14:18] = 1  # a cross
  return m


def _images(seed: int) -> jnp.ndarray:
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (2, RES, RES, 3)), jnp.float32)


def _slope_penalty(score_fn, x: jnp.ndarray, mask: np.ndarray) -> tuple[float, float]:
  """Independent per-sample reference (float64 reductions):
  (mean_i (s_i - 1)^2, mean_i s_i) with s_i = sqrt(sum (dD(x_i)/dx_i)^2 M_i)."""
  grad_one = jax.jit(jax.grad(lambda z: score_fn(z[None])[0]))
  slopes = []
  for i in range(x.shape[0]):
    g = np.asarray(grad_one(x[i]), np.float64)
    slopes.append(np.sqrt(np.sum(g * g * mask[i])))
  slopes = np.asarray(slopes)
  return float(np.mean((slopes - 1.0) ** 2)), float(np.mean(slopes))


@pytest.mark.slow  # double-backward / generator compiles on XLA:CPU
def test_both_gradient_penalties_are_restricted_to_the_hole():
  parts = deocclusion_stage.GanParts(_cfg(adversarial="wgan_gp", n_critic=1), RES)
  dp = jax.jit(parts.critics.init)(
      jax.random.key(0), jnp.zeros((1, RES, RES, 3)), jnp.zeros((1, LOCAL, LOCAL, 3))
  )["params"]
  y, fake = _images(1), _images(2)
  m = _irregular_masks()
  key = jax.random.key(3)
  _, _, terms, _ = jax.jit(parts.critic_updates)(
      dp, parts.d_tx.init(dp), y, fake, jnp.asarray(m), key
  )
  k_glob, k_loc = jax.random.split(key, 2)

  def score(method):
    return lambda z: parts.critics.apply({"params": dp}, z, method=method)

  xg = adv.random_interpolates(y, fake, k_glob)
  crop = lambda z: crop_hole_boxes(z, jnp.asarray(m), LOCAL)  # noqa: E731
  xl = adv.random_interpolates(crop(y), crop(fake), k_loc)
  m_loc = np.asarray(crop(jnp.asarray(m)))
  assert 0.05 < m_loc.mean() < 0.95  # the local patch holds known pixels too
  ref_g, _ = _slope_penalty(score("global_score"), xg, m)
  ref_l, slope_l = _slope_penalty(score("local_score"), xl, m_loc)
  unmasked_l, slope_unmasked = _slope_penalty(score("local_score"), xl, np.ones_like(m_loc))
  print(
      f"\nlocal penalty: restricted to the hole {ref_l:.4f} (mean slope {slope_l:.4f}), "
      f"whole patch as before {unmasked_l:.4f} (mean slope {slope_unmasked:.4f}); "
      f"global {ref_g:.4f}"
  )
  assert float(terms[2]) == pytest.approx(ref_g + ref_l, rel=1e-4)
  # The old whole-patch penalty (mask=None) measured a different slope.
  assert slope_l < 0.95 * slope_unmasked
  assert float(terms[2]) != pytest.approx(ref_g + unmasked_l, rel=1e-4)


@pytest.mark.slow  # double-backward / generator compiles on XLA:CPU
def test_deepfill_reconstruction_uses_the_configured_weights():
  kw = dict(
      reconstruction="deepfill", coarse_alpha=1.5, l1_alpha=2.0, ae_alpha=0.5, discount_gamma=0.8
  )
  parts = deocclusion_stage.GanParts(_cfg(**kw), RES)
  state = jax.jit(parts.init)(jax.random.key(0))
  x, y = _images(4), _images(5)
  m = jnp.asarray(_irregular_masks())

  @jax.jit
  def run(g, d):
    _, (rec, _, _, _) = parts.generator_loss(g, d, x * (1 - m), m, y)
    o = parts.gen.apply({"params": g}, x * (1 - m), m)
    want = deepfill_reconstruction_loss(
        y, o.coarse, o.refined, m, gamma=0.8, coarse_alpha=1.5, l1_alpha=2.0, ae_alpha=0.5
    )["total"]
    return rec, want, deepfill_reconstruction_loss(y, o.coarse, o.refined, m)["total"]

  rec, want, default = (float(v) for v in run(state["g"], state["d"]))
  assert rec == pytest.approx(want, rel=1e-5)
  assert abs(default - rec) > 1e-3 * rec  # the defaults (1.2, 1.2, 1.2, 0.9) give another value


def test_paper_config_uses_deepfill_v1_objective_and_synthetic_keeps_eq_7_8():
  d = paper_celeba.get_config().deocclusion
  assert (d.reconstruction, d.adversarial) == ("deepfill", "wgan_gp")
  assert d.lambda_adv == 0.001 and d.gp_lambda == 10.0 and d.n_critic == 5
  assert (d.coarse_alpha, d.l1_alpha, d.ae_alpha, d.discount_gamma) == (1.2, 1.2, 1.2, 0.9)
  assert d.contextual_attention
  for o in (d.g_optimizer, d.d_optimizer):
    assert (o.optimizer, o.lr, o.b1, o.b2) == ("adam", 1e-4, 0.5, 0.9)
  s = synthetic.get_config().deocclusion
  assert (s.reconstruction, s.adversarial) == ("l1", "gan")


@pytest.mark.slow  # double-backward / generator compiles on XLA:CPU
def test_wgan_gp_step_runs_n_critic_updates_per_generator_update():
  cfg = _cfg(reconstruction="deepfill", adversarial="wgan_gp", lambda_adv=0.001, n_critic=2)
  init_fn, step_fn = deocclusion_stage.make_fns(cfg, RES)
  state = jax.jit(init_fn)(jax.random.key(0))
  m = jnp.asarray(_irregular_masks())
  y = _images(6)
  new, metrics = jax.jit(step_fn)(state, {"masked": y * (1 - m), "mask": m, "clean": y})
  metrics = {k: float(v) for k, v in metrics.items()}
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert metrics["loss/gradient_penalty"] > 0
  counts = [
      int(leaf)
      for leaf in jax.tree_util.tree_leaves(new["d_opt"])
      if np.ndim(leaf) == 0 and np.issubdtype(np.asarray(leaf).dtype, np.integer)
  ]
  g_counts = [
      int(leaf)
      for leaf in jax.tree_util.tree_leaves(new["g_opt"])
      if np.ndim(leaf) == 0 and np.issubdtype(np.asarray(leaf).dtype, np.integer)
  ]
  assert counts and max(counts) == 2 and g_counts and max(g_counts) == 1


def test_table2_g_without_contextual_attention_stage_and_input():
  """Table 2's "GA w/o attention": stage 'deocclusion_noca' trains the same G
  with the contextual_attention flag off under its own folder; its completions
  are the evaluation input 'completed_noca' when (and only when) it ran."""
  from deocc_jax import main
  from deocc_jax.evaluation import evaluator
  from deocc_jax.runs import factories
  from deocc_jax.runs.models import STAGES, Models
  from deocc_jax.training import stages

  assert "deocclusion_noca" in main.stage_table() and "deocclusion_noca" in STAGES
  config = paper_celeba.get_config()
  order = list(config.stages)
  assert order.index("deocclusion_noca") == order.index("deocclusion") + 1
  assert stages.deocclusion_section(config, "deocclusion").contextual_attention
  noca = stages.deocclusion_section(config, "deocclusion_noca")
  assert not noca.contextual_attention and config.deocclusion.contextual_attention
  assert (noca.reconstruction, noca.adversarial) == ("deepfill", "wgan_gp")  # same objective
  gen = builders.generator_from_config(noca)
  assert not gen.use_contextual_attention
  assert "completed_noca" in synthetic.get_config().evaluate.inputs
  assert evaluator.INPUTS["completed_noca"] == "G without CA, true mask"

  def fake_models(noca_fn):
    return Models(
        RES,
        {},
        lambda x, m: x,
        None,
        np.zeros((RES, RES, 3), np.float32),
        np.zeros((5, 2), np.float32),
        {},
        None,
        None,
        completions={} if noca_fn is None else {"deocclusion_noca": noca_fn},
    )

  class View:
    mask = np.zeros((1, RES, RES, 1), np.float32)
    masked = np.zeros((1, RES, RES, 3), np.float32)

  mesh = factories.make_mesh(synthetic.get_config())
  without = evaluator.Evaluator(fake_models(None), mesh, 8, 1)
  assert not without.available(View, "completed_noca")
  with_noca = evaluator.Evaluator(fake_models(lambda x, m: x * 0 + 0.5), mesh, 8, 1)
  assert with_noca.available(View, "completed_noca")
  np.testing.assert_allclose(with_noca.images(View, "completed_noca"), 0.5)
