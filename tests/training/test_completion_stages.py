"""Table 2's completion methods as stages (training/completion_stages.py): GFC and
IDGAN trained by the generic runner on 'deocclusion''s batches, their artefacts
restored to the library's completion, and the recognisers retrained on them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags

from deocc_jax.errors import ConfigError
from deocc_jax.models import completion_baselines as cb
from deocc_jax.models.face_parser import FaceParser
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import factories, kinds
from deocc_jax.runs import models as run_models
from deocc_jax.runs import trained_models
from deocc_jax.training import (
    baseline_stages,
    completion_stages,
    distillation_stage,
    registry,
    stage_spec,
    stages,
    teacher_stage,
)
from tests.helpers.configs import tiny_config

flags.FLAGS.mark_as_parsed()
RES = 32
STEPS = {"num_steps": 2, "log_every": 1, "checkpoint_every": 2, "batch_size": 8}
TINY_GAN = {"critic_cnum": 4, "local_size": 16}


def _config():
  return tiny_config(
      deocclusion={"batch_size": 8},
      deocclusion_gfc={**STEPS, **TINY_GAN, "base": 4, "parser_width": 4},
      deocclusion_idgan={**STEPS, **TINY_GAN, "base": 4},
  )


def _write_initial(c, workdir, stage, section, num_classes):
  """An ArcFace network at its initialisation as ``stage``'s artefact (no training)."""
  init_fn, _ = teacher_stage.make_fns(section, num_classes, RES)
  spec = trained_models.arcface_spec(section, num_classes, RES, {})
  spec = art.Spec(spec.kind, spec.variables, spec.facts, factories.data_facts(c, workdir))
  art.write(workdir, stage, 0, spec, jax.device_get(init_fn(jax.random.key(7))))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A teacher and a student-sized ArcFace at initialisation; GFC and IDGAN, 2 steps each."""
  c = _config()
  workdir = str(tmp_path_factory.mktemp("completions"))
  n = stage_spec.train_source(c).num_classes
  _write_initial(c, workdir, "teacher", c.teacher, n)
  _write_initial(c, workdir, "pretrain_arcface", c.pretrain_arcface, n)
  gfc = stage_spec.train_stage(c, workdir, registry.get("deocclusion_gfc"))
  idgan = stage_spec.train_stage(c, workdir, registry.get("deocclusion_idgan"))
  return c, workdir, jax.device_get(gfc), jax.device_get(idgan)


def _faces(c):
  """A batch of 'deocclusion''s stream (occluders drawn as the loop does)."""
  c = c.copy_and_resolve_references()
  c.data.occluders = "host"
  batches, _ = stage_spec.make_batches(c, c.deocclusion, stages.DEOCCLUSION)
  b = next(iter(batches))
  return jnp.asarray(b["masked"]), jnp.asarray(b["mask"])


def _same_tree(a, b):
  return jax.tree.all(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b))


def _check_completion(restored, library, x, m):
  got, want = np.asarray(restored(x, m)), np.asarray(library(x, m))
  assert np.array_equal(got, want)  # exactly the library's completion
  known = np.broadcast_to(np.asarray(m) == 0, got.shape)
  assert known.any() and (~known).any()
  assert np.array_equal(got[known], np.asarray(x)[known])  # pixels outside the hole kept
  assert not np.array_equal(got[~known], np.asarray(x)[~known])  # the hole is filled
  return got


def test_gfc_stage_trains_and_restores_to_the_librarys_completion(run):
  c, workdir, state, _ = run
  assert int(state["step"]) == 2 and "frozen" not in state
  # the parser trains in the stage (each step, on the landmark labels)
  init_fn, _, _ = completion_stages.gfc_fns(c.deocclusion_gfc, RES)
  start = jax.device_get(init_fn(registry.get("deocclusion_gfc").key(c)))
  assert not _same_tree(start["parser"], state["parser"])
  assert not _same_tree(start["g"], state["g"])
  a = art.read(workdir, "deocclusion_gfc")
  assert a.step == 2 and a.facts["architecture"] == "gfc"
  assert _same_tree(a.variables["params"], state["g"])
  lib = cb.make_gfc_fns(
      RES,
      optax.identity(),
      optax.identity(),
      base=4,
      critic_cnum=4,
      local_size=16,
      parser=FaceParser(width=4),
  )
  x, m = _faces(c)
  _check_completion(
      trained_models.generator_from(a), lambda x, m: lib.complete(state["g"], x, m), x, m
  )


def test_idgan_stage_trains_with_the_frozen_teacher_and_restores(run):
  c, workdir, _, state = run
  assert int(state["step"]) == 2
  assert set(state) == {"g", "d", "g_opt", "d_opt", "rng", "step"}  # no teacher in the state
  plan = completion_stages.idgan_plan(c, workdir, stage_spec.train_source(c), None)
  teacher = art.read(workdir, "teacher").variables
  assert _same_tree(plan.frozen["backbone"], teacher["params"]["backbone"])
  a = art.read(workdir, "deocclusion_idgan")
  assert a.facts["architecture"] == "idgan"
  lib = cb.make_idgan_fns(
      RES, optax.identity(), optax.identity(), lambda p, x: x, base=4, critic_cnum=4
  )
  x, m = _faces(c)
  _check_completion(
      trained_models.generator_from(a), lambda x, m: lib.complete(state["g"], x, m), x, m
  )


def test_completion_stages_see_deocclusions_batches():
  """Same key, same host batches and the same device occluders (the stream's salt)."""
  c = _config()
  spec = lambda n: registry.get(n)  # noqa: E731
  batches = {}
  for name in ("deocclusion", "deocclusion_noca", "deocclusion_gfc", "deocclusion_idgan"):
    assert spec(name).seed(c) == spec("deocclusion").seed(c)
    it, _ = stage_spec.make_batches(c, c.deocclusion, spec(name))
    batches[name] = (next(iter(it.batches)), it.prepare.args[1:])
  ref_batch, ref_args = batches["deocclusion"]
  for name, (b, args) in batches.items():
    assert args == ref_args, name  # pipeline seed and occluder salt
    for k in ("image", "landmarks", "identity"):
      assert np.array_equal(b[k], ref_batch[k]), (name, k)
  other, _ = stage_spec.make_batches(c, c.deocclusion, spec("segmentation"))
  assert other.prepare.args[1:] != ref_args


def test_students_retrained_on_gfc_complete_with_gfc(run, monkeypatch):
  c, workdir, state, _ = run
  seen = {}
  make_fns = distillation_stage.make_fns

  def spy(*args, **kw):
    seen["complete"] = kw["complete"]
    return make_fns(*args, **kw)

  monkeypatch.setattr(distillation_stage, "make_fns", spy)
  spec = registry.get("distill_hard_gfc")
  assert (spec.seed_offset, spec.stream) == (
      registry.get("distill_hard").seed_offset,
      "distill_hard",
  )
  plan = spec.plan(c, workdir, stage_spec.train_source(c), None)
  used = {"stage": "deocclusion_gfc", "step": 2, "architecture": "gfc"}
  assert plan.artefact.facts["generator"] == used
  assert plan.artefact.facts["config"]["generator"] == "deocclusion_gfc"
  assert plan.section.instance == "hard"
  assert _same_tree(plan.frozen["generator"], state["g"])
  x, m = _faces(c)
  inside = np.asarray(seen["complete"](plan.frozen["generator"], x, m))
  restored = trained_models.generator_from(art.read(workdir, "deocclusion_gfc"))
  assert np.array_equal(inside, np.asarray(restored(x, m)))
  # the fine-tuned baseline on IDGAN's completions records it too
  ft = registry.get("finetune_arcface_idgan").plan(c, workdir, stage_spec.train_source(c), None)
  assert ft.artefact.facts["generator"]["stage"] == "deocclusion_idgan"
  rows = kinds.recognizers()
  assert rows["student_soft_gfc"].stage == "distill_soft_gfc"
  assert rows["student_soft_gfc"].display == "student (soft), GFC completions"


def test_unknown_or_untrained_generator_stage_is_a_config_error(run, tmp_path):
  c, workdir, _, _ = run
  bad = c.copy_and_resolve_references()
  bad.distillation.generator = "deocclusion_gfc"
  with pytest.raises(ConfigError, match=r"config.distillation.generator='deocclusion_gfc'.*train"):
    stages.distill_fns(bad, str(tmp_path), "distill_hard", None)
  bad.distillation.generator = "deocclusion_foo"
  with pytest.raises(ConfigError, match=r"distillation.generator='deocclusion_foo' is not a de-"):
    stages.distill_fns(bad, workdir, "distill_hard", None)
  bad.finetune_arcface.generator = "deocclusion"  # not trained in this run
  with pytest.raises(ConfigError, match=r"finetune_arcface.generator='deocclusion': stage"):
    baseline_stages.finetune_fns(bad, workdir)


def test_restore_models_exposes_every_completion(run):
  c, workdir, _, _ = run
  models = run_models.restore_models(c, workdir)
  assert set(models.completions) == {"deocclusion_gfc", "deocclusion_idgan"}
  assert models.complete is None and models.steps["deocclusion_gfc"] == 2
  x, m = _faces(c)
  for stage, fn in models.completions.items():
    want = trained_models.generator_from(art.read(workdir, stage))(x, m)
    assert np.array_equal(np.asarray(fn(x, m)), np.asarray(want))
