"""Preemption loses nothing: on SIGTERM a stage saves a checkpoint at a step
every process agrees on, exits with status 143, and rerunning the command
resumes there to the parameters of an uninterrupted run.

* in-process: the loop on a tiny regression, SIGTERM sent by the data
  iterator itself while it draws batch k: stopped exactly at step k, the
  previous handler restored, the resume bitwise equal;
* one process, then two (jax.distributed on 127.0.0.1, gloo, 2 CPU devices
  each): the real ``deocc_jax.main`` command (tests/helpers/preemption_worker.py)
  SIGTERMed once the metrics log shows steps, checked against an
  uninterrupted run of the same command started beside it.

Parameters are compared bitwise: the resumed run restores the float32 state
and each process's data position exactly and runs the same compiled program
on the same devices, and XLA:CPU is deterministic, so nothing may differ.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import paths
from tests.helpers import subprocess_util as sp
from deocc_jax.training import checkpoint as ckpt_lib
from deocc_jax.training import loop, preemption
from deocc_jax.utils import sharding

ROOT = str(paths.ROOT)
WORKER = "tests.helpers.preemption_worker"  # run as python -m from ROOT
STEPS = 30  # the subprocess jobs' stage length
PACE_S = 0.3  # their seconds per step while a SIGTERM is expected
EXIT_BOUND_S = 60.0  # SIGTERM -> every process gone (a cluster's grace is ~30-120 s)


# ------------------------------------------------------------- in-process


class _Batches:
  """A checkpointable iterator (grain's get_state / set_state) of regression
  batches drawn from its position; ``on_draw(i)`` runs as batch i is drawn."""

  def __init__(self, on_draw=None):
    self.pos, self.on_draw = 0, on_draw

  def __next__(self):
    if self.on_draw is not None:
      self.on_draw(self.pos)
    rng = np.random.default_rng(self.pos)
    self.pos += 1
    x = rng.normal(size=(16, 8)).astype(np.float32)
    return {"x": x, "y": x @ np.arange(8, dtype=np.float32) + 1.0}

  def get_state(self) -> bytes:
    return json.dumps({"worker_count": 0, "pos": self.pos}).encode()

  def set_state(self, state: bytes) -> None:
    self.pos = json.loads(state)["pos"]


def _init(key):
  return {
      "w": jax.random.normal(key, (8,)) * 0.1,
      "b": jnp.zeros(()),
      "step": jnp.zeros((), jnp.int32),
  }


def _step(state, batch):
  def loss_fn(p):
    return jnp.mean((batch["x"] @ p["w"] + p["b"] - batch["y"]) ** 2)

  loss, g = jax.value_and_grad(loss_fn)({"w": state["w"], "b": state["b"]})
  return {
      "w": state["w"] - 0.05 * g["w"],
      "b": state["b"] - 0.05 * g["b"],
      "step": state["step"] + 1,
  }, {"loss": loss}


def _train(workdir, batches, steps=12, logs=None):
  cfg = loop.LoopConfig(
      num_steps=steps, log_every=4, checkpoint_every=100, async_checkpoints=True, progress=False
  )
  return loop.run(
      "tiny",
      str(workdir),
      _init,
      _step,
      batches,
      jax.random.key(0),
      sharding.make_mesh(),
      cfg,
      log=(logs.append if logs is not None else lambda s: None),
  )


def test_sigterm_in_process_saves_that_step_and_resumes_bitwise(tmp_path):
  outside = []  # SIGTERMs that reached the test's own handler

  def test_handler(signum, frame):
    outside.append(signum)

  original = signal.signal(signal.SIGTERM, test_handler)
  try:
    full = jax.device_get(_train(tmp_path / "full", _Batches()))
    assert signal.getsignal(signal.SIGTERM) is test_handler

    kill_at = 5  # SIGTERM while batch 5 (the 6th step's) is drawn
    logs = []
    draws = []

    def on_draw(i):
      draws.append(i)
      if i == kill_at:
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(preemption.Preempted) as e:
      _train(tmp_path / "cut", _Batches(on_draw), logs=logs)
    assert outside == []  # the loop's handler took it
    assert signal.getsignal(signal.SIGTERM) is test_handler  # restored
    assert e.value.code == preemption.EXIT_STATUS == 143
    assert e.value.step == kill_at + 1 and draws == list(range(kill_at + 1))
    assert f"[tiny] preempted at step {kill_at + 1}, checkpoint saved in " in logs[-1], logs
    ckpt = ckpt_lib.Checkpointer(tmp_path / "cut" / "tiny" / "checkpoints", writer=False)
    try:
      assert ckpt.all_steps() == [kill_at + 1] and ckpt.recorded_latest() == kill_at + 1
    finally:
      ckpt.close()

    logs = []
    resumed = jax.device_get(_train(tmp_path / "cut", _Batches(), logs=logs))
    assert f"[tiny] resumed from step {kill_at + 1}" in logs[0], logs
    assert int(resumed["step"]) == int(full["step"]) == 12
    for k in ("w", "b"):
      np.testing.assert_array_equal(resumed[k], full[k])
    assert outside == []
  finally:
    signal.signal(signal.SIGTERM, original)


def test_watch_of_several_processes_agrees_at_entry(monkeypatch):
  """The multi-process branch's decisions (the real 2-process job is below):
  a loop's entry stops when any process holds the notice; per step, JAX's sync
  point decides; a disabled preemption service warns and never stops."""
  calls, peer, logs = [], [0], []
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(
      preemption.multihost_utils,
      "reached_preemption_sync_point",
      lambda step: calls.append(step) or step == 7,
  )
  monkeypatch.setattr(
      preemption.multihost_utils, "process_allgather", lambda x: np.array([x, peer[0]])
  )
  monkeypatch.setattr(preemption, "notice_received", lambda: False)
  handler = signal.getsignal(signal.SIGTERM)
  with preemption.Watch() as w:
    assert w.mode == "jax" and signal.getsignal(signal.SIGTERM) is handler  # JAX's own
    assert not w.stop_at_entry(3) and calls == [3]  # the loop's first step registered
    assert not w.reached(4) and w.reached(7) and calls == [3, 4, 7]
    assert not w.late()
  peer[0] = 1  # the other process saw the notice
  with preemption.Watch() as w:
    assert w.stop_at_entry(3)
  peer[0] = 0
  monkeypatch.setattr(preemption, "notice_received", lambda: True)
  with preemption.Watch() as w:
    assert w.stop_at_entry(3)

  def disabled(step):
    raise RuntimeError("Preemption sync manager has not been initialized.")

  monkeypatch.setattr(preemption.multihost_utils, "reached_preemption_sync_point", disabled)
  with preemption.Watch(logs.append) as w:
    assert not w.stop_at_entry(3) and not w.reached(7) and w.mode == "off"
  assert len(logs) == 1 and "jax_enable_preemption_service" in logs[0], logs


# ------------------------------------------------------------- subprocesses


class _Jobs:
  """The test's worker processes; whatever still runs at the end is killed."""

  def __init__(self, tmp_path):
    self.tmp, self.procs = tmp_path, []

  def start(self, name, nproc, pace=0.0, out=None):
    workdir = self.tmp / name
    port = sp.free_port()
    env = sp.cpu_env(2)
    env.update(PREEMPT_PACE_S=str(pace), PREEMPT_OUT=str(out or ""))
    procs = []
    for i in range(nproc):
      cmd = [
          sys.executable,
          "-m",
          WORKER,
          f"--config={ROOT}/deocc_jax/configs/base.py",
          f"--workdir={workdir}",
          "--config.stages=('probe',)",
          "--config.progress=False",
          "--config.data.identities=40",
          "--config.data.images_per_identity=4",
          "--config.data.resolution=32",
          "--config.teacher.batch_size=16",
          f"--config.teacher.num_steps={STEPS}",
          "--config.teacher.log_every=1",
          "--config.teacher.checkpoint_every=1000",  # only the preemption's and the last
      ]
      if nproc > 1:
        cmd += [
            "--config.distributed.mode=manual",
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            f"--config.distributed.num_processes={nproc}",
            f"--config.distributed.process_id={i}",
        ]
      log = self.tmp / f"{name}_{len(self.procs) + i}.log"
      with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
      p.log = log
      procs.append(p)
    self.procs += procs
    return procs

  def kill_all(self):
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait()


@pytest.fixture
def jobs(tmp_path):
  j = _Jobs(tmp_path)
  try:
    yield j
  finally:
    j.kill_all()


def _out(p):
  return p.log.read_text()


def _wait_ok(procs, timeout=300):
  deadline = time.monotonic() + timeout
  for p in procs:
    try:
      p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      pytest.fail(f"still running after {timeout} s: {_out(p)[-3000:]}")
    assert p.returncode == 0, _out(p)[-4000:]


def _metric_lines(workdir):
  path = workdir / "probe" / "logs" / "metrics.jsonl"
  return len(path.read_text().splitlines()) if path.exists() else 0


def _params(out):
  with np.load(out / "params.npz") as z:
    return {k: z[k] for k in z.files}


def _preempt_and_resume(jobs, tmp_path, nproc):
  """Runs the job uninterrupted beside a paced copy; SIGTERMs every process of
  the copy once 3 steps are logged; checks the exit and the checkpoint,
  resumes the copy and returns (the agreed step, seconds from the SIGTERM until
  the checkpoint was saved, and until every process was gone)."""
  full = jobs.start("full", nproc, out=tmp_path / "out_full")
  cut = jobs.start("cut", nproc, pace=PACE_S)
  deadline = time.monotonic() + 300
  while _metric_lines(tmp_path / "cut") < 3:  # the metrics log is flushed per line
    for p in cut:
      assert p.poll() is None, _out(p)[-4000:]
    assert time.monotonic() < deadline, [_out(p)[-2000:] for p in cut]
    time.sleep(0.1)
  t_sig, t_sig_wall = time.monotonic(), time.time()
  for p in cut:
    p.send_signal(signal.SIGTERM)
  exit_s = []
  for p in cut:
    try:
      p.wait(timeout=max(1.0, t_sig + EXIT_BOUND_S - time.monotonic()))
    except subprocess.TimeoutExpired:
      pytest.fail(f"not gone {EXIT_BOUND_S:.0f} s after SIGTERM: {_out(p)[-3000:]}")
    exit_s.append(time.monotonic() - t_sig)
    assert p.returncode == preemption.EXIT_STATUS, _out(p)[-4000:]
  said = [
      re.findall(r"\[probe\] preempted at step (\d+), checkpoint saved in ", _out(p)) for p in cut
  ]
  assert all(len(s) == 1 for s in said), [_out(p)[-3000:] for p in cut]
  steps = {int(s[0]) for s in said}
  assert len(steps) == 1, said  # every process saved the same, agreed step
  # The notice the next stage's entry check reads is there (jax.distributed only).
  notices = [re.findall(r"^NOTICE (\w+) AT (\S+)$", _out(p), re.M) for p in cut]
  assert all(n and n[0][0] == str(nproc > 1) for n in notices), [_out(p)[-800:] for p in cut]
  saved_s = max(float(n[0][1]) for n in notices) - t_sig_wall
  step = steps.pop()
  assert 3 <= step < STEPS, step
  ckpt_dir = tmp_path / "cut" / "probe" / "checkpoints"
  ckpt = ckpt_lib.Checkpointer(ckpt_dir, writer=False)
  try:
    assert ckpt.all_steps() == [step] and ckpt.recorded_latest() == step
    _, per_process = ckpt.iterator_states(step)
    assert sorted(per_process) == list(range(nproc))  # every process's data position
  finally:
    ckpt.close()
  assert not (tmp_path / "cut" / ".lock").exists()  # released on the way out

  resumed = jobs.start("cut", nproc, out=tmp_path / "out_cut")
  _wait_ok(full + resumed)
  for p in resumed:
    assert f"[probe] resumed from step {step}" in _out(p), _out(p)[-3000:]
  a, b = _params(tmp_path / "out_full"), _params(tmp_path / "out_cut")
  assert sorted(a) == sorted(b) == ["b1", "b2", "w1", "w2"]
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  return step, saved_s, max(exit_s)


@pytest.mark.slow
def test_one_process_sigterm_saves_and_resumes_exactly(jobs, tmp_path):
  step, saved_s, exit_s = _preempt_and_resume(jobs, tmp_path, 1)
  print(
      f"1 process: preempted at step {step}: saved {saved_s:.1f} s and exited "
      f"{exit_s:.1f} s after SIGTERM"
  )


@pytest.mark.slow
def test_two_process_sigterm_agrees_saves_and_resumes_exactly(jobs, tmp_path):
  step, saved_s, exit_s = _preempt_and_resume(jobs, tmp_path, 2)
  print(
      f"2 processes: preempted at step {step}: both saved {saved_s:.1f} s and exited "
      f"{exit_s:.1f} s after SIGTERM"
  )
