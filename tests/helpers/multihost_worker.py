"""One process of the multi-host resume job of tests/integration/test_multihost_resume.py.

argv: port process_id num_processes workdir num_steps stall_after out_dir

Runs ``deocc_jax.main.run`` (lock, config.json, the shared loop, Orbax async
checkpoints, per-process grain iterator state) with one tiny stage, 'probe':
a small MLP identity classifier on the real masked-pair pipeline (synthetic
faces, 4 CPU devices per process, each process its own data shard). With
``stall_after`` > 0 the data iterator blocks forever once that many batches
were drawn (after that step's checkpoint was handed to Orbax), so the test
can SIGKILL the job mid-stage. Prints ``BATCH <sha1>`` per batch drawn and
writes the final parameters (gathered) to ``out_dir/params.npz`` (process 0).
"""

import hashlib
import os
import sys
import time

RESOLUTION = 32


def probe_config(num_steps: int):
  """The job's config (also built by the test, for its reference batches)."""
  from tests.helpers.configs import tiny_config

  return tiny_config(
      stages=("probe",),
      data={"resolution": RESOLUTION},
      checkpoint={"keep": 3, "async_save": True},
      teacher={
          "batch_size": 16,
          "num_steps": num_steps,
          "log_every": 1,
          "checkpoint_every": 2,
          "lr": 3e-3,
      },
  )


def probe_fns(num_classes: int):
  """(init_fn, step_fn): a 2-layer MLP over the masked face, Adam, cross-entropy."""
  import jax
  import jax.numpy as jnp
  import optax

  tx = optax.adam(3e-3)
  d = RESOLUTION * RESOLUTION * 3

  def init(key):
    k1, k2 = jax.random.split(key)
    p = {
        "w1": jax.random.normal(k1, (d, 16)) / jnp.sqrt(d),
        "b1": jnp.zeros(16),
        "w2": jax.random.normal(k2, (16, num_classes)) / 4.0,
        "b2": jnp.zeros(num_classes),
    }
    return {"params": p, "opt": tx.init(p), "step": jnp.zeros((), jnp.int32)}

  def step(state, batch):
    x = batch["masked"].reshape(batch["masked"].shape[0], -1)

    def loss_fn(p):
      logits = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["identity"]).mean()

    loss, g = jax.value_and_grad(loss_fn)(state["params"])
    upd, opt = tx.update(g, state["opt"], state["params"])
    return (
        {
            "params": optax.apply_updates(state["params"], upd),
            "opt": opt,
            "step": state["step"] + 1,
        },
        {"loss": loss},
    )

  return init, step


def batch_digest(batch) -> str:
  import numpy as np

  h = hashlib.sha1()
  # the host half: masked pairs (host occluders) or the clean faces the device occludes
  for k in ("masked" if "masked" in batch else "image", "identity"):
    h.update(np.ascontiguousarray(batch[k]).tobytes())
  return h.hexdigest()


class _Stall:
  """Forwards a grain iterator; blocks forever after ``after`` batches."""

  def __init__(self, it, after: int):
    self.it, self.after, self.drawn = it, after, 0
    self.prepare = getattr(it, "prepare", None)  # the device half (data.occluders='device')

  def __iter__(self):
    return self

  def __next__(self):
    if self.after and self.drawn >= self.after:
      print("STALLED", flush=True)
      while True:
        time.sleep(60)
    b = next(self.it)
    self.drawn += 1
    print("BATCH", batch_digest(b), flush=True)
    return b

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


def main() -> None:
  port, pid, nproc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
  workdir, num_steps, stall_after, out_dir = (
      sys.argv[4],
      int(sys.argv[5]),
      int(sys.argv[6]),
      sys.argv[7],
  )
  from tests.helpers.subprocess_util import xla_flags

  os.environ["XLA_FLAGS"] = xla_flags(4)
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax

  if nproc > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
  import numpy as np
  from absl import flags
  from jax.experimental import multihost_utils

  from deocc_jax import main as main_lib
  from deocc_jax.runs import factories
  from deocc_jax.training import loop, registry, stage_spec

  flags.FLAGS.mark_as_parsed()
  c = probe_config(num_steps)
  result = {}

  def probe_stage(config, wd):
    t = config.teacher
    batches, source = stage_spec.make_batches(config, t, registry.get("teacher"))
    init_fn, step_fn = probe_fns(source.num_classes)
    result["state"] = loop.run(
        "probe",
        wd,
        init_fn,
        step_fn,
        _Stall(batches, stall_after),
        jax.random.key(0),
        factories.make_mesh(config),
        stage_spec.loop_config(t, ("masked", "identity"), config),
        log=lambda s: print(s, flush=True),
    )

  main_lib.run(c, workdir, table={"probe": probe_stage})
  params = multihost_utils.process_allgather(result["state"]["params"], tiled=True)
  step = int(
      np.asarray(multihost_utils.process_allgather(result["state"]["step"], tiled=True)).ravel()[0]
  )
  print(f"DEVICES {jax.device_count()} PROCESSES {jax.process_count()} STEP {step}", flush=True)
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, "params.npz"), **{k: np.asarray(v) for k, v in params.items()})


if __name__ == "__main__":
  main()
