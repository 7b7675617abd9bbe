"""One process of the preempted jobs of tests/training/test_preemption.py.

argv: ``deocc_jax.main``'s flags (``--config``, ``--workdir``, overrides,
``--config.distributed.*`` for a multi-process job). Runs the real command
(``deocc_jax.main``: its SIGTERM handler, the jax.distributed start-up, the
workdir lock and config.json, absl, the exit status) with its stage table
replaced by one tiny stage, 'probe': tests.helpers.multihost_worker's MLP
identity classifier on the real masked-pair pipeline, trained by the shared
loop with ``config.teacher``'s loop settings.

Environment: ``PREEMPT_PACE_S`` (seconds to wait before drawing each batch,
so a stage lasts long enough for a SIGTERM to land mid-stage; it only paces
the steps, the test synchronises on the metrics log), ``PREEMPT_OUT`` (where
process 0 writes the final parameters, ``params.npz``, once the stage ends).
A preempted stage prints ``NOTICE True|False AT <unix time>``: whether JAX's
coordination service holds the preemption notice, once the checkpoint is saved.
"""

import os
import time


class _Paced:
  """Forwards a grain iterator, waiting ``pace`` seconds before each batch."""

  def __init__(self, it, pace: float):
    self.it, self.pace = it, pace
    self.prepare = getattr(it, "prepare", None)  # the device half (data.occluders='device')

  def __iter__(self):
    return self

  def __next__(self):
    if self.pace:
      time.sleep(self.pace)
    return next(self.it)

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


def probe_stage(config, workdir: str) -> None:
  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  from deocc_jax.runs import factories
  from deocc_jax.training import loop, preemption, registry, stage_spec
  from tests.helpers import multihost_worker as worker

  t = config.teacher
  batches, source = stage_spec.make_batches(config, t, registry.get("teacher"))
  init_fn, step_fn = worker.probe_fns(source.num_classes)
  try:
    state = loop.run(
        "probe",
        workdir,
        init_fn,
        step_fn,
        _Paced(batches, float(os.environ.get("PREEMPT_PACE_S", "0"))),
        jax.random.key(0),
        factories.make_mesh(config),
        stage_spec.loop_config(t, ("masked", "identity"), config),
        log=lambda s: print(s, flush=True),
    )
  except preemption.Preempted:
    # Whether JAX's coordination service holds the notice, as the next
    # stage's entry check would read it (multi-process jobs only).
    print(f"NOTICE {preemption.notice_received()} AT {time.time():.3f}", flush=True)
    raise
  params = multihost_utils.process_allgather(state["params"], tiled=True)
  out = os.environ.get("PREEMPT_OUT", "")
  if out and jax.process_index() == 0:
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, "params.npz"), **{k: np.asarray(v) for k, v in params.items()})


if __name__ == "__main__":
  from deocc_jax import main as main_lib

  main_lib.stage_table = lambda: {"probe": probe_stage}
  main_lib.console_main()
