"""The generic loop: sharded == single device, kill-and-resume, NaN guard, restore."""

import os

import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deocc_jax.training import loop
from deocc_jax.utils import sharding


class _Toy:

  def __len__(self):
    return 256

  def __repr__(self):
    return "_Toy()"

  def __getitem__(self, i):
    rng = np.random.default_rng(i)
    x = rng.normal(size=8).astype(np.float32)
    return {"x": x, "y": np.float32(x @ np.arange(8) / 8 + 0.1 * rng.normal())}


def _batches(seed=0, batch=16):
  sampler = grain.IndexSampler(256, grain.NoSharding(), shuffle=True, num_epochs=None, seed=seed)
  return iter(
      grain.DataLoader(
          data_source=_Toy(), sampler=sampler, operations=[grain.Batch(batch, drop_remainder=True)]
      )
  )


def _fns(lr=0.1, poison_at=None):
  tx = optax.sgd(lr, momentum=0.9)

  def init(key):
    params = {"w": jax.random.normal(key, (8,)) * 0.1, "b": jnp.zeros(())}
    return {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  def step(state, batch):
    def loss_fn(p):
      pred = batch["x"] @ p["w"] + p["b"]
      return jnp.mean((pred - batch["y"]) ** 2)

    loss, g = jax.value_and_grad(loss_fn)(state["params"])
    if poison_at is not None:
      loss = jnp.where(state["step"] + 1 >= poison_at, jnp.nan, loss)
    upd, opt = tx.update(g, state["opt"], state["params"])
    return (
        {
            "params": optax.apply_updates(state["params"], upd),
            "opt": opt,
            "step": state["step"] + 1,
        },
        {"loss": loss, "grad_norm": optax.tree.norm(g)},
    )

  return init, step


def _run(workdir, steps, mesh, ckpt_every=2, **kw):
  init, step = _fns(**kw)
  cfg = loop.LoopConfig(
      num_steps=steps,
      log_every=1,
      checkpoint_every=ckpt_every,
      async_checkpoints=False,
      progress=False,
  )
  return loop.run(
      "toy", str(workdir), init, step, _batches(), jax.random.key(0), mesh, cfg, log=lambda s: None
  )


def _params(state):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(state["params"]))


def test_sharded_equals_single_device(tmp_path):
  assert jax.device_count() == 8
  s8 = _run(tmp_path / "a", 5, sharding.make_mesh())
  s1 = _run(tmp_path / "b", 5, sharding.make_mesh(1))
  for a, b in zip(jax.tree_util.tree_leaves(_params(s8)), jax.tree_util.tree_leaves(_params(s1))):
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
  full = _run(tmp_path / "full", 8, mesh)
  _run(tmp_path / "killed", 4, mesh)  # "killed" after step 4's checkpoint
  resumed = _run(tmp_path / "killed", 8, mesh)  # same workdir: resumes at 4
  for a, b in zip(
      jax.tree_util.tree_leaves(_params(full)), jax.tree_util.tree_leaves(_params(resumed))
  ):
    np.testing.assert_array_equal(a, b)
  assert int(resumed["step"]) == 8


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  mesh = sharding.make_mesh()
  with pytest.raises(
      loop.NonFiniteLossError,
      match=r"non-finite \['loss'\] at step 5.*" r"last good checkpoint \(step 4\)",
  ):
    _run(tmp_path, 10, mesh, poison_at=5)
  steps = sorted(int(d) for d in os.listdir(tmp_path / "toy" / "checkpoints") if d.isdigit())
  assert steps[-1] == 4


def test_restore_onto_a_different_device_count(tmp_path):
  s8 = _run(tmp_path, 4, sharding.make_mesh())
  init, _ = _fns()
  step, s2 = loop.restore_state(
      str(tmp_path), "toy", init, jax.random.key(0), sharding.make_mesh(2), fsdp=True
  )
  assert step == 4
  for a, b in zip(jax.tree_util.tree_leaves(_params(s8)), jax.tree_util.tree_leaves(_params(s2))):
    np.testing.assert_array_equal(a, b)
  assert len(jax.tree_util.tree_leaves(s2)[0].sharding.device_set) == 2


def test_keep_best_checkpoints_by_metric(tmp_path):
  import json

  init, step = _fns(lr=0.05)
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
      _batches(),
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
