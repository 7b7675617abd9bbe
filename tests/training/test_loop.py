"""The generic loop: sharded == single device, kill-and-resume, NaN guard, restore."""

import os

import jax
import numpy as np
import pytest

from deocc_jax.training import loop
from deocc_jax.utils import sharding
from tests.helpers import toy_training as toy


def test_sharded_equals_single_device(tmp_path):
  assert jax.device_count() == 8
  s8 = toy.run(tmp_path / "a", 5, sharding.make_mesh())
  s1 = toy.run(tmp_path / "b", 5, sharding.make_mesh(1))
  for a, b in zip(
      jax.tree_util.tree_leaves(toy.params_of(s8)), jax.tree_util.tree_leaves(toy.params_of(s1))
  ):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  log8 = open(tmp_path / "a" / "toy" / "logs" / "metrics.jsonl").read().splitlines()
  log1 = open(tmp_path / "b" / "toy" / "logs" / "metrics.jsonl").read().splitlines()
  import json

  l8 = [json.loads(l)["loss"] for l in log8]
  l1 = [json.loads(l)["loss"] for l in log1]
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  assert any(
      f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "a" / "toy" / "logs")
  )


def test_kill_and_resume_reaches_the_same_parameters(tmp_path):
  mesh = sharding.make_mesh()
  full = toy.run(tmp_path / "full", 8, mesh)
  toy.run(tmp_path / "killed", 4, mesh)  # "killed" after step 4's checkpoint
  resumed = toy.run(tmp_path / "killed", 8, mesh)  # same workdir: resumes at 4
  for a, b in zip(
      jax.tree_util.tree_leaves(toy.params_of(full)),
      jax.tree_util.tree_leaves(toy.params_of(resumed)),
  ):
    np.testing.assert_array_equal(a, b)
  assert int(resumed["step"]) == 8


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  mesh = sharding.make_mesh()
  with pytest.raises(
      loop.NonFiniteLossError,
      match=r"non-finite \['loss'\] at step 5.*" r"last good checkpoint \(step 4\)",
  ):
    toy.run(tmp_path, 10, mesh, poison_at=5)
  steps = sorted(int(d) for d in os.listdir(tmp_path / "toy" / "checkpoints") if d.isdigit())
  assert steps[-1] == 4


def test_restore_onto_a_different_device_count(tmp_path):
  s8 = toy.run(tmp_path, 4, sharding.make_mesh())
  init, _ = toy.make_fns()
  step, s2 = loop.restore_state(
      str(tmp_path), "toy", init, jax.random.key(0), sharding.make_mesh(2), fsdp=True
  )
  assert step == 4
  for a, b in zip(
      jax.tree_util.tree_leaves(toy.params_of(s8)), jax.tree_util.tree_leaves(toy.params_of(s2))
  ):
    np.testing.assert_array_equal(a, b)
  assert len(jax.tree_util.tree_leaves(s2)[0].sharding.device_set) == 2


def test_keep_best_checkpoints_by_metric(tmp_path):
  import json

  init, step = toy.make_fns(lr=0.05)
  cfg = loop.LoopConfig(
      num_steps=8,
      log_every=1,
      checkpoint_every=1,
      keep_checkpoints=2,
      best_metric="loss",
      best_mode="min",
      async_checkpoints=False,
      progress=False,
  )
  loop.run(
      "toy",
      str(tmp_path),
      init,
      step,
      toy.batches(),
      jax.random.key(0),
      sharding.make_mesh(),
      cfg,
      log=lambda s: None,
  )
  losses = {
      r["step"]: r["loss"]
      for r in map(json.loads, open(tmp_path / "toy" / "logs" / "metrics.jsonl"))
  }
  kept = sorted(int(d) for d in os.listdir(tmp_path / "toy" / "checkpoints") if d.isdigit())
  assert kept == sorted(sorted(losses, key=losses.get)[:2])
