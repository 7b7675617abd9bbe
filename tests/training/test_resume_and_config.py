"""A real stage killed and resumed reaches the same parameters; config errors are clear."""

import jax
import numpy as np
import pytest
from absl import flags

from deocc_jax import main as main_lib  # noqa: E402
from deocc_jax.errors import ConfigError  # noqa: E402
from deocc_jax.runs import factories
from deocc_jax.training import deocclusion_stage, loop, registry, stage_spec  # noqa: E402
from tests.helpers.configs import tiny_config  # noqa: E402

flags.FLAGS.mark_as_parsed()


def _train(workdir, steps):
  c = tiny_config()
  c.deocclusion.batch_size = 8
  c.deocclusion.num_steps = steps
  c.deocclusion.checkpoint_every = 2
  c.deocclusion.log_every = 1
  c.deocclusion.sample_every = 0
  stage_spec.train_stage(c, str(workdir), registry.get("deocclusion"))
  init_fn, _ = deocclusion_stage.make_fns(c.deocclusion, 32)
  return loop.restore_state(
      str(workdir), "deocclusion", init_fn, jax.random.key(0), factories.make_mesh(c)
  )


@pytest.mark.slow
def test_deocclusion_killed_at_step_2_and_resumed_equals_uninterrupted(tmp_path):
  step_a, full = _train(tmp_path / "full", 4)
  _train(tmp_path / "killed", 2)  # the run dies after its step-2 checkpoint
  step_b, resumed = _train(tmp_path / "killed", 4)
  assert step_a == step_b == 4
  for name in ("g", "d", "g_opt", "d_opt", "rng"):
    for x, y in zip(
        jax.tree_util.tree_leaves(full[name]), jax.tree_util.tree_leaves(resumed[name])
    ):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bad_config_values_name_the_key(tmp_path):
  c = tiny_config()
  c.stages = ("teacher",)
  c.teacher.kind = "oracle"
  with pytest.raises(
      ConfigError,
      match=r"config.teacher.kind must be 'arcface', 'dlib' or " r"'converted', got 'oracle'",
  ):
    main_lib.run(c, str(tmp_path / "a"))
  c = tiny_config()
  c.stages = ("deocclusion",)
  c.data.source = "imagenet"
  with pytest.raises(ConfigError, match="config.data.source must be"):
    main_lib.run(c, str(tmp_path / "b"))
  c = tiny_config()
  c.stages = ("deocclusion",)
  with c.unlocked():  # a hand-made config without the section
    del c["pipeline"]
  with pytest.raises(ConfigError, match="missing required field 'pipeline'"):
    main_lib.run(c, str(tmp_path / "c"))
  c = tiny_config()
  c.stages = ("teacher_embeddings",)
  with pytest.raises(
      FileNotFoundError, match="stage 'teacher' has no trained artefacts .* run that " "stage first"
  ):
    main_lib.run(c, str(tmp_path / "empty"))  # earlier stages never ran
  c.stages = ("distill_soft",)  # its completion network is checked before anything loads
  with pytest.raises(ConfigError, match=r"config.distillation.generator='deocclusion': stage "):
    main_lib.run(c, str(tmp_path / "empty"))
