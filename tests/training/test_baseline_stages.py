"""The paper's baseline of Table 2 (Sec. 4.2, "Distillation vs Fine-tune"): an
ArcFace recogniser of the student's size, pretrained on clean faces by its own
stage, fine-tuned on completed faces; the teacher fine-tuned is an extra row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax import main as main_lib
from deocc_jax.errors import ConfigError
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import builders, kinds
from deocc_jax.runs import models as eval_models
from deocc_jax.training import baseline_stages, registry

TWO_STEPS = {"num_steps": 2, "log_every": 1, "checkpoint_every": 2, "batch_size": 16}


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
  """A teacher and the student-sized ArcFace, 2 steps each (the fine-tuning
  stages read them; ``input='masked'`` needs no generator)."""
  from tests.helpers.configs import tiny_config

  c = tiny_config(
      stages=("teacher", "pretrain_arcface"),
      teacher=TWO_STEPS,
      pretrain_arcface=TWO_STEPS,
      finetune_arcface={**TWO_STEPS, "input": "masked", "warmup_steps": 0},
  )
  workdir = str(tmp_path_factory.mktemp("baseline"))
  main_lib.run(c, workdir)
  return c, workdir


def _backbone(state):
  return jax.tree.map(np.asarray, state["params"]["backbone"])


def _same(a, b) -> bool:
  return jax.tree.all(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b))


def test_finetune_arcface_starts_from_the_student_sized_network_not_the_teacher(pretrained_run):
  c, workdir = pretrained_run
  pretrained = art.read(workdir, "pretrain_arcface").variables["params"]["backbone"]
  teacher = art.read(workdir, "teacher").variables["params"]["backbone"]
  assert not _same(pretrained, teacher)  # its own initialisation and data order
  _, init_fn, _, _, spec = baseline_stages.finetune_fns(c, workdir, "finetune_arcface")
  start = _backbone(init_fn(jax.random.key(0)))
  assert _same(start, jax.tree.map(np.asarray, pretrained))
  assert spec.facts["teacher"]["stage"] == "pretrain_arcface"  # recorded in the artefact


def test_finetune_teacher_starts_from_the_teacher(pretrained_run):
  c, workdir = pretrained_run
  _, init_fn, _, _, spec = baseline_stages.finetune_fns(c, workdir, "finetune_teacher")
  teacher = art.read(workdir, "teacher").variables["params"]["backbone"]
  assert _same(_backbone(init_fn(jax.random.key(0))), jax.tree.map(np.asarray, teacher))
  assert spec.facts["teacher"]["kind"] == "arcface"


def test_the_fine_tunings_train_by_their_own_section(pretrained_run):
  """config.finetune_arcface is the whole recipe of both fine-tunings; of the
  network fine-tuned only its architecture is read (its weights fix it)."""
  c, workdir = pretrained_run
  other = c.copy_and_resolve_references()
  other.teacher.weight_decay, other.teacher.arcface_scale = 0.7, 9.0  # the network's: unread
  other.finetune_arcface.weight_decay = 1e-4
  pretrained = art.read(workdir, "pretrain_arcface").facts["config"]
  for stage, network in (("finetune_teacher", c.teacher), ("finetune_arcface", pretrained)):
    cfg, *_ = baseline_stages.finetune_fns(other, workdir, stage)
    assert cfg.weight_decay == 1e-4, stage
    assert cfg.arcface_scale == c.finetune_arcface.arcface_scale, stage
    assert (cfg.width, cfg.embed_dim) == (network["width"], network["embed_dim"]), stage
    assert "kind" not in cfg  # nothing else of the network's section


def test_the_pretrained_baseline_has_the_students_architecture(pretrained_run):
  """Same layers, same shapes as the student the distillation trains."""
  c, workdir = pretrained_run
  pretrained = art.read(workdir, "pretrain_arcface").variables["params"]["backbone"]
  student = builders.student_from_config(c.distillation, int(c.teacher.embed_dim), None)
  init = lambda key: student.init(key, jnp.zeros((1, 32, 32, 3)), train=False)  # noqa: E731
  shapes = jax.eval_shape(init, jax.random.key(0))["params"]
  assert jax.tree.map(lambda x: tuple(x.shape), shapes) == jax.tree.map(
      lambda x: tuple(np.shape(x)), pretrained
  )


def test_bad_init_and_missing_path_name_the_field(pretrained_run, tmp_path):
  c, workdir = pretrained_run
  bad = c.copy_and_resolve_references()
  bad.finetune_arcface.init = "teacher"
  with pytest.raises(ConfigError, match=r"finetune_arcface.init must be one of"):
    baseline_stages.finetune_fns(bad, workdir)
  bad.finetune_arcface.init = "converted"
  with pytest.raises(ConfigError, match=r"config.finetune_arcface.path must name"):
    baseline_stages.finetune_fns(bad, workdir)
  with pytest.raises(art.ArtefactNotFoundError, match="pretrain_arcface"):  # not run here
    baseline_stages.finetune_fns(c, str(tmp_path))


def test_rows_are_named_after_their_networks():
  rec = kinds.recognizers()
  assert rec["arcface_finetuned"].stage == "finetune_arcface"
  assert rec["arcface_finetuned"].display == "student-sized ArcFace fine-tuned"
  assert rec["teacher_finetuned"].stage == "finetune_teacher"
  assert rec["arcface_pretrained"].stage == "pretrain_arcface"
  baselines = ("pretrain_arcface", "finetune_arcface", "finetune_teacher")
  others = {  # their retrained copies (Table 2) are paired with them: same key
      s.seed_offset
      for s in registry.SPECS.values()
      if s.name not in baselines and s.stream not in baselines
  }
  own = [registry.get(n).seed_offset for n in baselines]
  assert len(set(own)) == 3 and not set(own) & others  # each its own random key

  class _T:
    name = "vggface2_resnet50"

  m = eval_models.Models.__new__(eval_models.Models)
  object.__setattr__(m, "teacher", _T())
  object.__setattr__(m, "pretrained", {"pretrained_sphereface20": "SphereFace-20, pretrained"})
  assert m.display("teacher_finetuned") == "teacher (vggface2_resnet50) fine-tuned"
  assert m.display("arcface_finetuned") == "student-sized ArcFace fine-tuned"
  assert m.display("pretrained_sphereface20") == "SphereFace-20, pretrained"
