"""One process of the two-process CPU job used by tests/test_multiprocess.py.

argv: port process_id workdir. Trains the de-occlusion stage for 3 steps on
a multi-process mesh (each process: 2 CPU devices, its own data shard) and
prints a checksum of the generator parameters. Then writes an artefact with
process 0 slow to write (every process must see it on return) and one that
process 0 fails to write (every process must raise).
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2 " + os.environ.get(
    "DEOCC_TEST_XLA_COMPILE_FLAGS", ""
)
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

port, pid, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from deocc_jax.configs import base as synthetic  # noqa: E402  (configs/synthetic.py's body)

from deocc_jax.training import deocclusion_stage, loop, stages  # noqa: E402

flags.FLAGS.mark_as_parsed()
c = synthetic.get_config()
c.data.identities, c.data.images_per_identity = 40, 4
c.deocclusion.cnum, c.deocclusion.critic_cnum, c.deocclusion.batch_size = 4, 4, 8
c.checkpoint.async_save = False
c.progress = False
section = c.deocclusion
batches, _ = stages.make_batches(c, section, "deocclusion")
init_fn, step_fn = deocclusion_stage.make_fns(section, 32)
cfg = loop.LoopConfig(
    num_steps=3,
    log_every=1,
    checkpoint_every=3,
    async_checkpoints=False,
    batch_keys=("masked", "mask", "clean"),
    progress=False,
)
state = loop.run(
    "deocclusion",
    workdir,
    init_fn,
    step_fn,
    batches,
    jax.random.key(0),
    stages.make_mesh(c),
    cfg,
    log=lambda s: None,
)
g = multihost_utils.process_allgather(state["g"], tiled=True)
leaves = jax.tree_util.tree_leaves(g)
print(f"DEVICES {jax.device_count()} PROCESSES {jax.process_count()}")
print("CHECKSUM %.10e" % sum(float(np.abs(np.asarray(l, np.float64)).sum()) for l in leaves))
print(
    "STEP", int(np.asarray(multihost_utils.process_allgather(state["step"], tiled=True)).ravel()[0])
)

import time  # noqa: E402

from deocc_jax.training import artefacts  # noqa: E402
from deocc_jax.utils import files  # noqa: E402

real_write = files.write_atomic


def slow_write(path, data):
  time.sleep(3.0)
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
