from tests.helpers import paths

"""The workdir: one job per workdir (lock), config.json, non-local (gs://) paths."""

import json
import os
import socket
import subprocess
import sys

import pytest

from deocc_jax import main as main_lib
from deocc_jax.runs import workdir as wd
from deocc_jax.training.metrics_writer import MetricWriter, read_jsonl
from tests.helpers.tiny_run import tiny_config  # noqa: E402


def _noop_table(calls):
  return {"noop": lambda config, workdir: calls.append(workdir)}


def _config(**changes):
  c = tiny_config(stages=("noop",))
  for key, value in changes.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


# ------------------------------------------------------------------ lock


def test_second_job_on_a_workdir_is_refused_naming_pid_and_host(tmp_path):
  first = wd.WorkdirLock(tmp_path).acquire()
  with pytest.raises(wd.WorkdirInUseError) as e:
    wd.WorkdirLock(tmp_path).acquire()
  assert f"in use by PID {os.getpid()} on {socket.gethostname()}" in str(e.value)
  calls = []
  with pytest.raises(wd.WorkdirInUseError, match=f"in use by PID {os.getpid()}"):
    main_lib.run(_config(), str(tmp_path), table=_noop_table(calls))
  assert calls == []  # no stage ran
  first.release()
  assert not (tmp_path / ".lock").exists()
  main_lib.run(_config(), str(tmp_path), table=_noop_table(calls))
  assert calls == [str(tmp_path)] and not (tmp_path / ".lock").exists()


def test_stale_lock_of_a_dead_local_process_is_taken_over(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / ".lock").write_text(
      json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"})
  )
  msgs = []
  lock = wd.WorkdirLock(tmp_path, log=msgs.append).acquire()
  assert any(f"PID {dead.pid}" in m and "no longer running" in m for m in msgs), msgs
  assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
  lock.release()
  # a lock of another host is never taken over (its PID cannot be checked here)
  (tmp_path / ".lock").write_text(
      json.dumps({"pid": dead.pid, "host": "other-host", "started": "x"})
  )
  with pytest.raises(wd.WorkdirInUseError, match=f"PID {dead.pid} on other-host"):
    wd.WorkdirLock(tmp_path).acquire()


# ---------------------------------------------------------------- config


def test_config_json_written_resume_refuses_shape_or_data_changes(tmp_path):
  calls = []
  c = _config()
  main_lib.run(c, str(tmp_path), table=_noop_table(calls))
  on_disk = json.loads((tmp_path / "config.json").read_text())
  assert on_disk["data"]["resolution"] == c.data.resolution
  back = wd.read_config(tmp_path)
  assert back.data.categories == tuple(c.data.categories)  # lists back to tuples
  assert wd.config_diff(wd.config_to_dict(back), wd.config_to_dict(c), may_change=()) == []
  # run-control fields may change on a resume; config.json follows
  main_lib.run(
      _config(**{"teacher.num_steps": 99, "deocclusion.log_every": 1}),
      str(tmp_path),
      table=_noop_table(calls),
  )
  assert wd.read_config(tmp_path).teacher.num_steps == 99
  # shapes / data may not: one line naming every changed key
  bad = _config(**{"data.resolution": 64, "deocclusion.cnum": 8})
  with pytest.raises(wd.ConfigMismatchError) as e:
    main_lib.run(bad, str(tmp_path), table=_noop_table(calls))
  msg = str(e.value)
  assert "\n" not in msg
  assert "config.data.resolution: 32 -> 64" in msg and "config.deocclusion.cnum: 4 -> 8" in msg
  assert len(calls) == 2 and not (tmp_path / ".lock").exists()
  assert wd.read_config(tmp_path).data.resolution == 32  # untouched


def test_readers_use_config_json_when_no_config_is_given(tmp_path, capsys):
  from deocc_jax.training import distributed

  c = _config(**{"distributed.mode": "manual", "distributed.process_id": 0})
  main_lib.run(c, str(tmp_path), table=_noop_table([]))
  got = distributed.start_job(["evaluate"], None, str(tmp_path), config_optional=True)
  assert got.data.resolution == c.data.resolution and got.stages == ("noop",)
  assert got.distributed.mode == "none"  # process 0's launch settings are not reused
  capsys.readouterr()
  other = _config(**{"data.resolution": 48})
  assert distributed.start_job(["evaluate"], other, str(tmp_path), config_optional=True) is other
  err = capsys.readouterr().err
  assert err.startswith("warning: --config differs from") and "32 -> 48" in err


def test_config_validation_names_the_key(tmp_path):
  from deocc_jax.errors import ConfigError

  with pytest.raises(ConfigError, match=r"config.teacher.batch_size must be >= 1, got -8"):
    main_lib.run(_config(**{"teacher.batch_size": -8}), str(tmp_path), table=_noop_table([]))
  with pytest.raises(ConfigError, match=r"config.pipeline.read_threads must be >= 0, got -1"):
    main_lib.run(_config(**{"pipeline.read_threads": -1}), str(tmp_path), table=_noop_table([]))
  # the held-out split of an evaluating stage, before any stage runs
  ran = []
  table = {"noop": lambda c, w: ran.append("noop"), "ablation": lambda c, w: ran.append("abl")}
  bad = _config(stages=("noop", "ablation"), **{"evaluate.split": "val"})
  with pytest.raises(
      ConfigError, match=r"config.evaluate.split is 'val'; .*\['validation', 'test'\]"
  ):
    main_lib.run(bad, str(tmp_path), table=table)
  assert ran == []
  bad.evaluate.split = "validation"
  main_lib.run(bad, str(tmp_path / "ok"), table=table)
  assert ran == ["noop", "abl"]
  with pytest.raises(ConfigError, match=r"config.stages has unknown stage\(s\) \['nope'\]"):
    main_lib.run(_config(stages=("nope",)), str(tmp_path), table=_noop_table([]))
  assert not (tmp_path / "config.json").exists()


# ------------------------------------------------- non-local workdir (gs://)


def test_gs_workdir_lock_config_and_metrics_stay_remote(fake_gcs, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  run = "gs://bucket/runs/a"
  assert str(wd.as_path(run)) == run  # not os.path.abspath-ed
  calls = []
  main_lib.run(_config(), run, table=_noop_table(calls))
  assert calls == [run]
  assert json.loads(fake_gcs.cat_file("gs://bucket/runs/a/config.json"))["data"]["resolution"] == 32
  assert not fake_gcs.exists("gs://bucket/runs/a/.lock")  # released
  with wd.WorkdirLock(run):
    assert json.loads(fake_gcs.cat_file("gs://bucket/runs/a/.lock"))["pid"] == os.getpid()
    with pytest.raises(wd.WorkdirInUseError, match="in use by PID"):
      wd.WorkdirLock(run).acquire()
  with pytest.raises(wd.ConfigMismatchError, match="config.data.seed: 0 -> 1"):
    main_lib.run(_config(**{"data.seed": 1}), run, table=_noop_table(calls))

  logs = run + "/teacher/logs"
  w = MetricWriter(logs, enabled=True)
  w.scalars(1, {"loss": 2.0})
  w.close()
  w = MetricWriter(logs, enabled=True)  # a resumed run appends
  w.scalars(2, {"loss": 1.0})
  w.flush()
  assert [r["step"] for r in read_jsonl(logs + "/metrics.jsonl")] == [1, 2]
  w.close()
  names = [
      os.path.basename(f) for f in fake_gcs.ls("gs://bucket/runs/a/teacher/logs", detail=False)
  ]
  assert any(n.startswith("events.out.tfevents") for n in names), names
  assert os.listdir(tmp_path) == []  # nothing local, not even 'gs:'


@pytest.mark.slow
def test_infer_reads_config_json_and_reports_restored_steps(tiny_run, tmp_path):
  """``infer`` without ``--config`` uses the run's config.json; its JSON (and
  results.json) name the restored step of every model."""
  import numpy as np
  from PIL import Image

  config, workdir = tiny_run
  assert (
      wd.config_diff(
          wd.config_to_dict(wd.read_config(workdir)), wd.config_to_dict(config), may_change=()
      )
      == []
  )
  img = tmp_path / "a.png"
  Image.fromarray(np.linspace(0, 255, 32 * 32 * 3).reshape(32, 32, 3).astype(np.uint8)).save(img)
  root = str(paths.ROOT)
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "deocc_jax.infer",
          "verify",
          str(img),
          str(img),
          f"--workdir={workdir}",
      ],
      cwd=root,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(proc.stdout)
  steps = {s: 4 for s in ("teacher", "deocclusion", "segmentation", "distill_soft")}
  assert got["checkpoint_steps"] == steps
  assert "restored checkpoints: deocclusion step 4, distill_soft step 4" in proc.stderr
  assert "warning" not in proc.stderr
  results = json.loads(open(os.path.join(workdir, "results", "results.json")).read())
  assert results["checkpoint_steps"]["distill_soft"] == 4


def test_a_run_with_the_ar_pass_needs_the_ar_folder_before_any_stage():
  from deocc_jax.errors import ConfigError

  c = tiny_config()
  c.stages = ("teacher", "distill_ar")
  with pytest.raises(ConfigError, match=r"stage 'distill_ar' .* set config.evaluate.ar_root"):
    wd.validate_config(c)
  c.stages = ("rehearsal_data", "teacher", "distill_ar")  # writes its own AR, then points at it
  wd.validate_config(c)
  c.evaluate.ar_root = "/data/AR"
  c.stages = ("distill_ar",)
  wd.validate_config(c)
  c.distill_ar.train_images = (1, 8)  # 1 is unoccluded
  with pytest.raises(ConfigError, match=r"config.distill_ar.train_images must be occluded"):
    wd.validate_config(c)
  c.distill_ar.train_images = tuple(range(8, 14)) + tuple(range(21, 27))
  with pytest.raises(ConfigError, match=r"no sunglasses probe is left"):
    wd.validate_config(c)
  c.stages = ("teacher",)
  wd.validate_config(c)  # the pass is not run: nothing to check


def test_the_commands_start_up_validates_the_config(tmp_path):
  """main and evaluate start through distributed.start_job: a bad value is named
  before anything starts (infer / export validate the run's config likewise)."""
  from deocc_jax.errors import ConfigError
  from deocc_jax.training import distributed

  c = tiny_config()
  c.distillation.batch_size = 0
  with pytest.raises(ConfigError, match=r"config.distillation.batch_size must be >= 1, got 0"):
    distributed.start_job(["prog"], c, str(tmp_path))
