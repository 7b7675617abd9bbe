"""One process of the two-process CPU job used by tests/integration/test_multiprocess.py.

argv: port process_id workdir. Trains the de-occlusion stage for 3 steps on
a multi-process mesh (each process: 2 CPU devices, its own data shard),
prints a checksum of the generator parameters and saves them (process 0:
``<workdir>/g_params.npz``). Then writes an artefact with process 0 slow to
write (every process must see it on return) and one that process 0 fails to
write (every process must raise).
"""

import os
import sys

STEPS = 3
BATCH_KEYS = ("masked", "mask", "clean")


def job_config():
  """The job's config (the test rebuilds its batches in one process)."""
  from tests.helpers.configs import tiny_config

  return tiny_config(deocclusion={"batch_size": 8})


def main() -> None:
  from tests.helpers.subprocess_util import xla_flags

  os.environ["XLA_FLAGS"] = xla_flags(2)
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax

  port, pid, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)

  import time

  import numpy as np
  from absl import flags
  from jax.experimental import multihost_utils

  from deocc_jax.runs import artefacts, factories
  from deocc_jax.training import deocclusion_stage, loop, registry, stage_spec
  from deocc_jax.utils import files

  flags.FLAGS.mark_as_parsed()
  c = job_config()
  section = c.deocclusion
  batches, _ = stage_spec.make_batches(c, section, registry.get("deocclusion"))
  init_fn, step_fn = deocclusion_stage.make_fns(section, 32)
  cfg = loop.LoopConfig(
      num_steps=STEPS,
      log_every=1,
      checkpoint_every=STEPS,
      async_checkpoints=False,
      batch_keys=BATCH_KEYS,
      progress=False,
  )
  state = loop.run(
      "deocclusion",
      workdir,
      init_fn,
      step_fn,
      batches,
      jax.random.key(0),
      factories.make_mesh(c),
      cfg,
      log=lambda s: None,
  )
  g = multihost_utils.process_allgather(state["g"], tiled=True)
  leaves = jax.tree_util.tree_leaves_with_path(g)
  if pid == 0:
    np.savez(
        os.path.join(workdir, "g_params.npz"),
        **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves},
    )
  print(f"DEVICES {jax.device_count()} PROCESSES {jax.process_count()}")
  print("CHECKSUM %.10e" % sum(float(np.abs(np.asarray(v, np.float64)).sum()) for _, v in leaves))
  step = multihost_utils.process_allgather(state["step"], tiled=True)
  print("STEP", int(np.asarray(step).ravel()[0]))

  real_write = files.write_atomic

  def slow_write(path, data):
    time.sleep(3.0)  # process 0 is slow to write: the others must wait for it
    real_write(path, data)

  def failing_write(path, data):
    raise OSError(f"disk full writing {path}")

  spec = artefacts.Spec("generator", lambda s: {"params": s["g"]}, {"config": {}})
  files.write_atomic = slow_write
  artefacts.write(workdir, "probe", 7, spec, state)
  print("ARTEFACT_STEPS", artefacts.steps(workdir, "probe"), flush=True)
  files.write_atomic = failing_write
  try:
    artefacts.write(workdir, "probe", 8, spec, state)
    print("WRITE_ERROR none", flush=True)
  except Exception as e:  # noqa: BLE001 -- reported for the test to check
    print("WRITE_ERROR", type(e).__name__, "step_0000008.npz" in str(e), flush=True)


if __name__ == "__main__":
  main()
