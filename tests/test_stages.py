"""Stage steps on the device mesh: sharded == single device; a real stage resumes exactly."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "configs"))
import synthetic  # noqa: E402

from deocc_jax.data import pipeline as pipe  # noqa: E402
from deocc_jax.training import (deocclusion_stage, distillation_stage, sharding,  # noqa: E402
                                teacher_stage)

flags.FLAGS.mark_as_parsed()
RES = 32


def tiny_config():
  c = synthetic.get_config()
  c.data.identities, c.data.images_per_identity = 40, 4
  c.teacher.width, c.teacher.embed_dim = 0.125, 16
  c.deocclusion.cnum, c.deocclusion.critic_cnum, c.deocclusion.local_size = 4, 4, 16
  c.distillation.width = 0.125
  c.teacher.warmup_steps = c.distillation.warmup_steps = 0  # a real first update
  c.checkpoint.async_save = False
  c.progress = False
  return c


def _batch(n=8, seed=0):
  cfg = pipe.PipelineConfig(batch_size=n, seed=seed)
  loader, src = pipe.synthetic_loader(identities=40, images_per_identity=4, resolution=RES,
                                      config=cfg)
  return next(iter(loader)), src


def _run_step(init_fn, step_fn, batch, mesh, keys):
  abstract = jax.eval_shape(init_fn, jax.random.key(0))
  sh = sharding.state_shardings(abstract, mesh)
  state = jax.jit(init_fn, out_shardings=sh)(jax.random.key(0))
  b = sharding.host_batch_to_global({k: batch[k] for k in keys}, mesh)
  step = jax.jit(step_fn, in_shardings=(sh, sharding.data_sharding(mesh)),
                 out_shardings=(sh, sharding.replicated(mesh)))
  new, metrics = step(state, b)
  return jax.device_get(new), {k: float(v) for k, v in jax.device_get(metrics).items()}


PARAM_KEYS = ("params", "batch_stats", "g", "d")


def _assert_same(a, b, tol=1e-5):
  """Losses / metrics and the updated parameters agree (optimizer moments are
  accumulators of raw gradients and are compared through the parameters)."""
  sa, ma = a
  sb, mb = b
  assert ma.keys() == mb.keys()
  for k in ma:
    assert ma[k] == pytest.approx(mb[k], rel=tol, abs=tol), k
  pa = {k: sa[k] for k in PARAM_KEYS if k in sa}
  pb = {k: sb[k] for k in PARAM_KEYS if k in sb}
  assert pa and pa.keys() == pb.keys()
  for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                               rtol=tol, atol=tol)


def test_deocclusion_step_sharded_equals_single_device():
  c = tiny_config()
  batch, _ = _batch()
  init_fn, step_fn = deocclusion_stage.make_fns(c.deocclusion, RES)
  keys = ("masked", "mask", "clean")
  _assert_same(_run_step(init_fn, step_fn, batch, sharding.make_mesh(8), keys),
               _run_step(init_fn, step_fn, batch, sharding.make_mesh(1), keys))


def test_teacher_step_sharded_equals_single_device():
  c = tiny_config()
  batch, src = _batch()
  init_fn, step_fn = teacher_stage.make_fns(c.teacher, src.num_classes, RES)
  keys = ("clean", "identity")
  _assert_same(_run_step(init_fn, step_fn, batch, sharding.make_mesh(8), keys),
               _run_step(init_fn, step_fn, batch, sharding.make_mesh(1), keys))


@pytest.mark.parametrize("instance,sharded_rel", [("hard", False), ("soft", True)])
def test_distillation_step_sharded_equals_single_device(instance, sharded_rel):
  c = tiny_config()
  batch, src = _batch()
  t_init, _ = teacher_stage.make_fns(c.teacher, src.num_classes, RES)
  t_state = t_init(jax.random.key(1))
  t_embed = teacher_stage.embed_fn(c.teacher, t_state)
  g_init, _ = deocclusion_stage.make_fns(c.deocclusion, RES)
  frozen = {"teacher": {"dummy": jnp.zeros(())}, "generator": g_init(jax.random.key(2))["g"],
            "centroids": jax.random.normal(jax.random.key(3), (src.num_classes, 16))}
  dc = c.distillation
  dc.instance, dc.sharded_relational = instance, sharded_rel
  keys = ("masked", "mask", "clean", "identity")
  results = []
  for n in (8, 1):
    mesh = sharding.make_mesh(n)
    init_fn, step_fn = distillation_stage.make_fns(
        dc, c.deocclusion, lambda p, x: {"embedding": t_embed(x)}, 16, src.num_classes, RES,
        frozen, mesh)
    results.append(_run_step(init_fn, step_fn, batch, mesh, keys))
  _assert_same(*results, tol=2e-5)
