"""A toy regression trained by the generic loop (deocc_jax.training.loop): fast
checkpoints, resume and error paths without a model."""

import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import optax

from deocc_jax.training import loop


class ToyRegression:

  def __len__(self):
    return 256

  def __repr__(self):
    return "ToyRegression()"

  def __getitem__(self, i):
    rng = np.random.default_rng(i)
    x = rng.normal(size=8).astype(np.float32)
    return {"x": x, "y": np.float32(x @ np.arange(8) / 8 + 0.1 * rng.normal())}


def batches(seed=0, batch=16):
  sampler = grain.IndexSampler(256, grain.NoSharding(), shuffle=True, num_epochs=None, seed=seed)
  return iter(
      grain.DataLoader(
          data_source=ToyRegression(),
          sampler=sampler,
          operations=[grain.Batch(batch, drop_remainder=True)],
      )
  )


def make_fns(lr=0.1, poison_at=None):
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


def run(workdir, steps, mesh, ckpt_every=2, **kw):
  init, step = make_fns(**kw)
  cfg = loop.LoopConfig(
      num_steps=steps,
      log_every=1,
      checkpoint_every=ckpt_every,
      async_checkpoints=False,
      progress=False,
  )
  return loop.run(
      "toy", str(workdir), init, step, batches(), jax.random.key(0), mesh, cfg, log=lambda s: None
  )


def params_of(state):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(state["params"]))
