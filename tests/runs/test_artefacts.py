"""Trained artefacts (runs/artefacts.py, runs/trained_models.py): the
format, the kept steps, frozen models as jit arguments, and evaluation /
inference loading artefacts alone (no checkpoints, optimizer or training data)."""

import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from deocc_jax import errors
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import factories, trained_models
from deocc_jax.training import loop, registry, stage_spec
from deocc_jax.utils import sharding
from tests.helpers import tiny_run as tiny_run_lib  # noqa: E402

TRAINED = ("teacher", "deocclusion", "segmentation", "distill_hard", "distill_soft")


def _spec(kind="student"):
  return art.Spec(kind, lambda s: {"params": s["params"]}, {"config": {"width": 0.25}})


def test_encode_decode_round_trip_is_exact():
  rng = np.random.default_rng(0)
  variables = {
      "params": {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32)}},
      "batch_stats": {"bn": {"mean": rng.normal(size=(4,)).astype(np.float32)}},
      "half": {"w": rng.normal(size=(5,)).astype(ml_dtypes.bfloat16)},
      "count": np.int32(7),
  }
  arrays = {"mean_face": rng.uniform(-1, 1, (8, 8, 3)).astype(np.float32)}
  a = art.decode(art.encode(variables, {"kind": "student", "step": 3, "x": [1, 2]}, arrays))
  assert a.step == 3 and a.kind == "student" and a.facts["x"] == [1, 2]
  got, want = jax.tree.leaves(a.variables), jax.tree.leaves(variables)
  assert jax.tree.structure(a.variables) == jax.tree.structure(variables)
  for g, w in zip(got, want):
    assert g.dtype == np.asarray(w).dtype
    np.testing.assert_array_equal(np.asarray(g, np.float64), np.asarray(w, np.float64))
  np.testing.assert_array_equal(a.arrays["mean_face"], arrays["mean_face"])


def test_kept_steps_selection_and_clear_errors(tmp_path):
  """Newest ``keep`` plus the best ``keep`` by the metric; 'best' / 'latest' /
  a step; a truncated file is one error naming it."""
  losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: 3.0, 5: 6.0}
  for step, v in losses.items():
    state = {"params": {"w": np.full((2,), step, np.float32)}}
    art.write(tmp_path, "s", step, _spec(), state, {"loss": v}, 2, "loss", "min")
  # newest 2 = {4, 5}; best 2 by loss = {2, 4}
  assert art.steps(tmp_path, "s") == [2, 4, 5]
  assert art.select(tmp_path, "s", "latest") == 5
  assert art.select(tmp_path, "s", "best") == 2
  assert float(art.read(tmp_path, "s", "best").variables["params"]["w"][0]) == 2.0
  assert art.read(tmp_path, "s", 4).facts["metrics"] == {"loss": 3.0}
  with pytest.raises(errors.CheckpointNotFoundError, match=r"no checkpoint 3 .*\[2, 4, 5\]"):
    art.read(tmp_path, "s", 3)
  with pytest.raises(errors.CheckpointNotFoundError, match="stage 'other' has no trained"):
    art.read(tmp_path, "other")
  art.write(tmp_path, "u", 1, _spec(), {"params": {"w": np.zeros(2)}}, {}, 3)
  with pytest.raises(errors.CheckpointNotFoundError, match="no checkpoint 'best'"):
    art.read(tmp_path, "u", "best")
  path = art.directory(tmp_path, "s") / art.file_name(5)
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(errors.UnreadableCheckpointError, match=r"step_0000005\.npz cannot be read"):
    art.read(tmp_path, "s", "latest")
  with pytest.raises(ValueError, match="artefact kind 'optimizer'"):
    art.Spec("optimizer", lambda s: s, {})


def test_frozen_models_are_jit_arguments_not_state(tmp_path):
  """loop.run passes ``frozen`` as the step's third argument: the state (and
  so every checkpoint and artefact) holds only what trains; the result equals
  closing over the same values."""
  mesh = sharding.make_mesh()
  w_frozen = np.linspace(-1, 1, 8, dtype=np.float32)

  def init_fn(key):
    return {"params": jnp.zeros((8,)), "step": jnp.zeros((), jnp.int32)}

  def step_with(state, batch, frozen):
    g = jnp.mean(batch["x"], 0) * frozen["w"] - state["params"]
    new = {"params": state["params"] + 0.5 * g, "step": state["step"] + 1}
    return new, {"loss": jnp.sum(g**2)}

  def step_closed(state, batch):
    return step_with(state, batch, {"w": jnp.asarray(w_frozen)})

  class Batches:

    def __init__(self):
      self.i = 0

    def __next__(self):
      self.i += 1
      return {"x": np.full((8, 8), self.i, np.float32)}

    def get_state(self):
      return str(self.i).encode()

    def set_state(self, s):
      self.i = int(s)

  cfg = loop.LoopConfig(num_steps=3, checkpoint_every=3, async_checkpoints=False, progress=False)
  key = jax.random.key(0)
  a = loop.run(
      "a",
      tmp_path,
      init_fn,
      step_with,
      Batches(),
      key,
      mesh,
      cfg,
      frozen={"w": w_frozen},
      artefact=_spec(),
      log=lambda s: None,
  )
  b = loop.run("b", tmp_path, init_fn, step_closed, Batches(), key, mesh, cfg, log=lambda s: None)
  assert set(a) == {"params", "step"}
  np.testing.assert_allclose(np.asarray(a["params"]), np.asarray(b["params"]), rtol=1e-6)
  got = art.read(tmp_path, "a")
  assert got.step == 3 and set(got.variables) == {"params"}
  np.testing.assert_allclose(got.variables["params"], np.asarray(a["params"]), rtol=0)
  assert not art.has(tmp_path, "b")  # no spec, no artefact


def _embeddings(models, x):
  return {k: np.asarray(f(x)) for k, f in models.recognizers.items()}


@pytest.mark.slow
def test_evaluation_loads_artefacts_alone(tiny_run, tmp_path, monkeypatch):
  """Every trained stage of the tiny run wrote artefacts with their facts;
  with every checkpoint directory and the cached data facts removed, and
  the training data unreachable, restore_models gives the same models."""
  from deocc_jax.runs.models import restore_models

  config, workdir = tiny_run
  for stage in TRAINED + ("pretrain_arcface", "finetune_arcface"):
    a = art.read(workdir, stage)
    assert a.step == 4 and a.facts["resolution"] == tiny_run_lib.RESOLUTION, stage
    assert a.arrays["mean_face"].shape == (tiny_run_lib.RESOLUTION,) * 2 + (3,)
    assert not {"opt", "g_opt", "d_opt", "d", "frozen"} & set(a.variables), stage
  student = art.read(workdir, "distill_soft")
  assert student.facts["teacher"]["name"] == "arcface" and student.facts["teacher"]["step"] == 4
  assert student.facts["config"]["instance"] == "soft"
  assert set(student.variables) == {"params", "batch_stats"}
  teacher = art.read(workdir, "teacher")
  assert teacher.facts["num_classes"] == factories.teacher_source(config).num_classes

  ref = restore_models(config, workdir)
  bare = tmp_path / "bare"
  shutil.copytree(
      workdir,
      bare,
      ignore=shutil.ignore_patterns("checkpoints", "checkpoints_latest.json", "results", "*.npz"),
  )
  for stage in TRAINED + (
      "pretrain_arcface",
      "finetune_arcface",
  ):  # the artefacts themselves come back
    shutil.copytree(art.directory(workdir, stage), art.directory(bare, stage), dirs_exist_ok=True)
  assert not (bare / trained_models.DATA_FACTS).exists()
  assert not list(bare.glob("*/checkpoints"))

  def no_data(*a, **k):
    raise AssertionError("evaluation read the training data")

  monkeypatch.setattr(factories, "make_source", no_data)
  monkeypatch.setattr(factories, "teacher_source", no_data)
  got = restore_models(config, str(bare))
  assert got.steps == ref.steps and set(got.recognizers) == set(ref.recognizers)
  x = np.random.default_rng(0).uniform(-1, 1, (4,) + ref.mean_face.shape).astype(np.float32)
  m = np.zeros(x.shape[:-1] + (1,), np.float32)
  m[:, 8:20, 6:26] = 1
  for k, v in _embeddings(ref, x).items():
    np.testing.assert_array_equal(_embeddings(got, x)[k], v)
  np.testing.assert_array_equal(np.asarray(got.complete(x, m)), np.asarray(ref.complete(x, m)))
  np.testing.assert_array_equal(np.asarray(got.segment(x)), np.asarray(ref.segment(x)))
  np.testing.assert_array_equal(got.mean_face, ref.mean_face)
  np.testing.assert_array_equal(got.mean_landmarks, ref.mean_landmarks)


@pytest.mark.slow
def test_a_finished_stage_without_artefacts_writes_them_when_rerun(tiny_run, tmp_path):
  """A run trained before artefacts existed: rerunning the stage restores its
  last checkpoint, trains nothing, and writes the artefact of that step."""
  config, workdir = tiny_run
  work = tmp_path / "run"
  shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("results"))
  before = art.read(work, "segmentation")
  shutil.rmtree(art.directory(work, "segmentation"))
  with pytest.raises(errors.CheckpointNotFoundError, match="rerunning the stage's command"):
    art.read(work, "segmentation")
  stage_spec.train_stage(config, str(work), registry.get("segmentation"))
  after = art.read(work, "segmentation")
  assert after.step == before.step == 4
  for x, y in zip(jax.tree.leaves(after.variables), jax.tree.leaves(before.variables)):
    np.testing.assert_array_equal(x, y)
  assert after.facts["config"] == before.facts["config"]
