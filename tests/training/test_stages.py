"""Stage steps on the device mesh: sharded == single device; a real stage resumes exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from deocc_jax.data import pipeline as pipe  # noqa: E402
from deocc_jax.runs import builders
from deocc_jax.training import deocclusion_stage, distillation_stage, teacher_stage  # noqa: E402
from deocc_jax.utils import sharding  # noqa: E402
from tests.helpers.configs import tiny_config

flags.FLAGS.mark_as_parsed()
RES = 32


def _batch(n=8, seed=0):
  cfg = pipe.PipelineConfig(batch_size=n, seed=seed)
  loader, src = pipe.synthetic_loader(
      identities=40, images_per_identity=4, resolution=RES, config=cfg
  )
  return next(iter(loader)), src


def _run_step(init_fn, step_fn, batch, mesh, keys, frozen=None):
  abstract = jax.eval_shape(init_fn, jax.random.key(0))
  sh = sharding.state_shardings(abstract, mesh)
  state = jax.jit(init_fn, out_shardings=sh)(jax.random.key(0))
  b = sharding.host_batch_to_global({k: batch[k] for k in keys}, mesh)
  args, in_sh = (state, b), (sh, sharding.data_sharding(mesh))
  if frozen is not None:  # frozen models: the step's third argument, replicated
    f_sh = sharding.state_shardings(frozen, mesh)
    args, in_sh = args + (sharding.put_global(frozen, f_sh),), in_sh + (f_sh,)
  step = jax.jit(step_fn, in_shardings=in_sh, out_shardings=(sh, sharding.replicated(mesh)))
  new, metrics = step(*args)
  assert "frozen" not in new  # frozen models are never part of the state
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
    np.testing.assert_allclose(
        np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=tol, atol=tol
    )


def test_deocclusion_step_sharded_equals_single_device():
  c = tiny_config()
  batch, _ = _batch()
  init_fn, step_fn = deocclusion_stage.make_fns(c.deocclusion, RES)
  keys = ("masked", "mask", "clean")
  _assert_same(
      _run_step(init_fn, step_fn, batch, sharding.make_mesh(8), keys),
      _run_step(init_fn, step_fn, batch, sharding.make_mesh(1), keys),
  )


def test_teacher_step_sharded_equals_single_device():
  c = tiny_config()
  batch, src = _batch()
  init_fn, step_fn = teacher_stage.make_fns(c.teacher, src.num_classes, RES)
  keys = ("clean", "identity")
  _assert_same(
      _run_step(init_fn, step_fn, batch, sharding.make_mesh(8), keys),
      _run_step(init_fn, step_fn, batch, sharding.make_mesh(1), keys),
  )


@pytest.mark.parametrize("instance,sharded_rel", [("hard", False), ("soft", True)])
def test_distillation_step_sharded_equals_single_device(instance, sharded_rel):
  c = tiny_config()
  batch, src = _batch()
  t_init, _ = teacher_stage.make_fns(c.teacher, src.num_classes, RES)
  t_state = t_init(jax.random.key(1))
  t_embed = builders.teacher_embed_fn(c.teacher, t_state)
  g_init, _ = deocclusion_stage.make_fns(c.deocclusion, RES)
  frozen = {
      "teacher": {"dummy": jnp.zeros(())},
      "generator": g_init(jax.random.key(2))["g"],
      "centroids": jax.random.normal(jax.random.key(3), (src.num_classes, 16)),
  }
  dc = c.distillation
  dc.instance, dc.sharded_relational = instance, sharded_rel
  keys = ("masked", "mask", "clean", "identity")
  results = []
  for n in (8, 1):
    mesh = sharding.make_mesh(n)
    init_fn, step_fn = distillation_stage.make_fns(
        dc,
        c.deocclusion,
        lambda p, x: {"embedding": t_embed(x)},
        16,
        src.num_classes,
        RES,
        mesh,
    )
    results.append(_run_step(init_fn, step_fn, batch, mesh, keys, frozen))
  _assert_same(*results, tol=2e-5)


def _logsoftmax64(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_distillation_ce_on_teacher_outputs_over_teacher_classes():
  """L_CE as the paper defines it (text after Eq. 16): the student's head has
  one output per *teacher* class (here 11, not the 40 training identities) and
  is trained on the teacher's softened distribution, T^2 KL at temperature T,
  checked against a float64 reference. (Before: the head had the identities'
  size and ce_target='teacher' raised on the shape mismatch.)"""
  c = tiny_config()
  batch, src = _batch()
  n_teacher = 11
  assert n_teacher != src.num_classes
  w = jax.random.normal(jax.random.key(4), (RES * RES * 3, n_teacher)) * 0.05

  def teacher_apply(p, x):
    flat = x.reshape(x.shape[0], -1)
    return {
        "embedding": flat[:, :16] / jnp.linalg.norm(flat[:, :16], axis=1, keepdims=True),
        "logits": flat @ p["w"],
    }

  m0 = jnp.zeros((1, RES, RES, 1)).at[:, 8:16, 8:16].set(1)
  g_params = builders.generator_from_config(c.deocclusion).init(
      jax.random.key(2), jnp.zeros((1, RES, RES, 3)), m0
  )["params"]
  frozen = {"teacher": {"w": w}, "generator": g_params}
  dc = c.distillation
  dc.ce_target, dc.temperature, dc.instance = "teacher", 3.0, "hard"
  init_fn, step_fn = distillation_stage.make_fns(
      dc,
      c.deocclusion,
      teacher_apply,
      16,
      src.num_classes,
      RES,
      teacher_num_classes=n_teacher,
  )
  state = init_fn(jax.random.key(0))
  assert state["params"]["classifier"]["kernel"].shape[-1] == n_teacher
  b = {k: jnp.asarray(batch[k]) for k in ("masked", "mask", "clean", "identity")}
  _, metrics = jax.jit(step_fn)(state, b, frozen)
  # Reference: the student's logits on the completed faces (train-mode BN, as in the step).
  student = builders.student_from_config(dc, 16, n_teacher)
  complete = builders.complete_fn(c.deocclusion, frozen["generator"])

  @jax.jit
  def student_logits(p, stats, x, m):
    out, _ = student.apply(
        {"params": p, "batch_stats": stats}, complete(x, m), train=True, mutable=["batch_stats"]
    )
    return out["logits"]

  s_logits = {
      "logits": student_logits(state["params"], state["batch_stats"], b["masked"], b["mask"])
  }
  t = 3.0
  lt = _logsoftmax64(np.asarray(teacher_apply(frozen["teacher"], b["clean"])["logits"]) / t)
  ls = _logsoftmax64(np.asarray(s_logits["logits"]) / t)
  want = t * t * np.mean(np.sum(np.exp(lt) * (lt - ls), axis=1))
  assert float(metrics["loss/ce"]) == pytest.approx(want, rel=1e-4)
  assert 0.0 <= float(metrics["train/teacher_agreement"]) <= 1.0
  # Embedding needs no classifier, whatever its size.
  emb = builders.student_embed_fn(dc, 16, state)(b["clean"])
  np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=1), 1.0, rtol=1e-5)


def test_distillation_ce_teacher_without_classifier_is_a_clear_error():
  c = tiny_config()
  dc = c.distillation
  dc.ce_target = "teacher"
  with pytest.raises(ValueError, match=r"ce_target='teacher'.*dlib.*no classifier"):
    distillation_stage.make_fns(
        dc,
        c.deocclusion,
        lambda p, x: {},
        16,
        40,
        RES,
        teacher_num_classes=None,
        teacher_name="teacher 'dlib'",
    )
  dc.ce_target = "labels"  # label cross-entropy stays available, head over the identities
  assert distillation_stage.head_classes(dc, 40, None) == 40
  dc.use_ce = False
  assert distillation_stage.head_classes(dc, 40, 8631) is None
