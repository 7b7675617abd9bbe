"""A run's directory: paths (local, gs://, any epath scheme), the lock, config.json.

* :func:`as_path` turns a ``--workdir`` into an ``etils.epath.Path``: local
  paths become absolute, URIs (``gs://bucket/runs/x``, ``s3://...``) stay
  as they are (never ``os.path.abspath``-ed into a local folder). Everything
  a run writes or reads under its workdir goes through epath: checkpoints,
  metrics, samples, config.json, the lock, render_data's sheets / stats,
  teacher_embeddings' arrays, the evaluation / ablation reports and
  calibration.json. Data-set roots and other user inputs (CelebA / LFW / AR
  folders, mask libraries, converted weights, inference images, galleries
  and ``infer embed --out``) stay local paths, read with os / PIL.
* :class:`WorkdirLock`: one training job per workdir. Process 0 creates
  ``<workdir>/.lock`` (PID, host, start time); a second job fails with
  "in use by PID ... on HOST". A lock left by a dead process of *this* host
  (a killed job) is taken over with a message; one from another host is
  reported (delete the file if that job is gone). Creation is exclusive
  (``O_EXCL``) on local / shared POSIX filesystems; on object stores it is
  check-then-write (a best effort: two jobs starting in the same second can
  both pass).
* ``<workdir>/config.json``: the resolved config, written (atomically) when
  a run starts. A resume whose config differs from it in anything but the
  run-control fields (:data:`RESUME_MAY_CHANGE`: step counts, logging and
  checkpoint intervals, stages, devices, evaluation settings...) is refused
  with a one-line diff; ``evaluate`` / ``infer`` read it when ``--config`` is
  not given (and warn when a given one differs from it).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Iterable

from etils import epath
from ml_collections import ConfigDict

from deocc_jax.configs import base as base_config
from deocc_jax.configs import require
from deocc_jax.errors import ConfigError
from deocc_jax.utils.files import is_remote, write_atomic

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"

# Config keys (fnmatch patterns, dotted) a resumed run may change: they
# neither change array shapes nor the data stream of the steps already taken.
RESUME_MAY_CHANGE = (
    "stages",
    "progress",
    "distributed.*",
    "mesh.*",
    "checkpoint.*",
    "render.*",
    "evaluate.*",
    "ablation.*",
    "teacher_embeddings.*",
    "pipeline.worker_count",
    "pipeline.read_threads",
    "*.num_steps",
    "*.log_every",
    "*.checkpoint_every",
    "*.sample_every",
    "*.best_metric",
    "*.best_mode",
)


class WorkdirError(ValueError):
  """A user error about the workdir (in use, config mismatch)."""


class WorkdirInUseError(WorkdirError):
  """Another job holds the workdir's lock."""


class ConfigMismatchError(WorkdirError):
  """A resume's config changes shapes / the data of the run in the workdir."""


def as_path(workdir: Any) -> epath.Path:
  """``--workdir`` as an epath.Path: local paths absolute, URIs untouched."""
  text = os.fspath(workdir)
  if not text:
    raise WorkdirError("--workdir is empty")
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


# ------------------------------------------------------------------ lock


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """Exclusive lock of a workdir, held by process 0 of a job (see module doc)."""

  def __init__(self, workdir: Any, log=print):
    self.workdir = as_path(workdir)
    self.path = self.workdir / LOCK_FILE
    self.log = log
    self.held = False

  def _info(self) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

  def _create(self) -> bool:
    text = json.dumps(self._info())
    if is_remote(self.path):
      if self.path.exists():
        return False
      self.path.write_text(text)
      return True
    try:
      fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(text)
    return True

  def _holder(self) -> dict[str, Any]:
    try:
      return json.loads(self.path.read_text())
    except (FileNotFoundError, ValueError):
      return {}

  def acquire(self) -> "WorkdirLock":
    self.workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
      if self._create():
        self.held = True
        return self
      holder = self._holder()
      pid, host = holder.get("pid"), holder.get("host", "?")
      if (
          isinstance(pid, int)
          and host == socket.gethostname()
          and pid != os.getpid()
          and not _pid_alive(pid)
      ):
        self.log(
            f"workdir {self.workdir}: taking over the lock of PID {pid} on {host}, "
            f"which is no longer running"
        )
        try:
          self.path.unlink()
        except FileNotFoundError:
          pass
        continue
      if not holder:  # being written / unreadable: look again
        time.sleep(0.2)
        continue
      raise WorkdirInUseError(
          f"workdir {self.workdir} is in use by PID {pid} on {host} (since "
          f"{holder.get('started', '?')}); wait for that job, use another --workdir, or "
          f"delete {self.path} if that job is gone"
      )
    raise WorkdirInUseError(
        f"cannot lock workdir {self.workdir}: {self.path} keeps " f"reappearing or is unreadable"
    )

  def release(self) -> None:
    if self.held:
      self.held = False
      if self._holder().get("pid") == os.getpid():
        try:
          self.path.unlink()
        except FileNotFoundError:
          pass

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


# ---------------------------------------------------------------- config


def config_to_dict(config: ConfigDict) -> dict[str, Any]:
  """The resolved config as plain JSON-able data (tuples become lists)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _tuplify(x: Any) -> Any:
  if isinstance(x, dict):
    return {k: _tuplify(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuplify(v) for v in x)
  return x


def _to_config(data: dict[str, Any]) -> ConfigDict:
  out = ConfigDict()
  for k, v in data.items():
    out[k] = _to_config(v) if isinstance(v, dict) else _tuplify(v)
  return out


def _with_base_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
  """``saved`` plus every field of ``defaults`` it lacks (recursively)."""
  out = dict(saved)
  for key, value in defaults.items():
    if key not in out:
      out[key] = value
    elif isinstance(value, dict) and isinstance(out[key], dict):
      out[key] = _with_base_defaults(out[key], value)
  return out


def read_config(workdir: Any) -> ConfigDict:
  """``<workdir>/config.json`` as a ConfigDict (lists back to tuples).

  Fields the run's file lacks (written by an older version) take the base
  config's defaults (``deocc_jax/configs/base.py``), the values the code used
  for them then."""
  path = as_path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(
        f"{path} not found: pass --config (the run's config file and "
        f"overrides), or point --workdir at a run started by this version"
    )
  try:
    data = json.loads(path.read_text())
  except ValueError as e:
    raise WorkdirError(f"{path} is not valid JSON ({e})") from e
  return _to_config(_with_base_defaults(data, config_to_dict(base_config.get_config())))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def config_diff(
    old: dict[str, Any], new: dict[str, Any], may_change: Iterable[str] = RESUME_MAY_CHANGE
) -> list[tuple[str, Any, Any]]:
  """(key, old, new) of the fields present in both that differ, except ``may_change``."""
  import fnmatch

  a, b = _flatten(old), _flatten(new)
  pats = tuple(may_change)
  return [
      (k, a[k], b[k])
      for k in sorted(set(a) & set(b))
      if a[k] != b[k] and not any(fnmatch.fnmatchcase(k, p) for p in pats)
  ]


def differences(workdir: Any, config: ConfigDict) -> str:
  """The shape / data fields in which ``config`` differs from the run's
  config.json, as one line ('' when none, or when there is no config.json)."""
  path = as_path(workdir) / CONFIG_FILE
  if not path.exists():
    return ""
  try:
    old = json.loads(path.read_text())
  except ValueError as e:
    raise WorkdirError(f"{path} is not valid JSON ({e})") from e
  diff = config_diff(old, config_to_dict(config))
  shown = "; ".join(f"config.{k}: {o!r} -> {n!r}" for k, o, n in diff[:8])
  return shown + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")


def check_config(workdir: Any, config: ConfigDict) -> None:
  """Refuses (:class:`ConfigMismatchError`, one line) a resume whose config
  differs from the run's config.json in shapes / data; no-op without one."""
  shown = differences(workdir, config)
  if shown:
    raise ConfigMismatchError(
        f"a resume of {as_path(workdir)} with a config that changes shapes or data: "
        f"{shown}; use the run's config ({as_path(workdir) / CONFIG_FILE}) or another "
        f"--workdir"
    )


def warn_if_different(workdir: Any, config: ConfigDict) -> None:
  """For readers (evaluate / infer) given ``--config``: one warning line on
  stderr if it differs from the run's config.json (the given one is used)."""
  import sys

  shown = differences(workdir, config)
  if shown:
    print(
        f"warning: --config differs from {as_path(workdir) / CONFIG_FILE} (the run's "
        f"config; omit --config to use it): {shown}",
        file=sys.stderr,
        flush=True,
    )


def write_config(workdir: Any, config: ConfigDict) -> epath.Path:
  """Checks against, then (re)writes ``<workdir>/config.json`` atomically."""
  check_config(workdir, config)
  path = as_path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomic(path, json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")
  return path


# ------------------------------------------------------------ validation


def _walk(config: ConfigDict, prefix: str = ""):
  for k in config.keys():
    v = config[k]
    if isinstance(v, ConfigDict):
      yield from _walk(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", k, v


OCCLUDER_MODES = ("host", "device")  # config.data.occluders (training/occluder_stream.py)


def occluder_mode(config: ConfigDict) -> str:
  """``config.data.occluders``, checked."""
  value = require(config, "data.occluders")
  if value not in OCCLUDER_MODES:
    raise ConfigError(f"config.data.occluders must be 'host' or 'device', got {value!r}")
  return str(value)


def validate_config(config: ConfigDict) -> None:
  """Value checks every run needs, naming the key (a ``ConfigError``); every
  command calls it before it starts (train, evaluate, prepare, infer, export)."""
  positive = ("batch_size", "log_every", "checkpoint_every")
  non_negative = ("num_steps", "sample_every", "worker_count", "read_threads", "max_shift_px")
  for key, leaf, v in _walk(config):
    if leaf in positive + non_negative:
      if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"config.{key} must be an integer, got {v!r}")
      low = 1 if leaf in positive else 0
      if v < low:
        raise ConfigError(f"config.{key} must be {'>= 1' if low else '>= 0'}, got {v}")
  _validate_held_out_split(config)
  if "data" in config and "occluders" in config.data:  # before any stage, not at its start
    occluder_mode(config)
  _validate_ar_pass(config)


def _validate_ar_pass(config: ConfigDict) -> None:
  """Stage 'distill_ar' reads AR: checked before any stage trains."""
  stages = tuple(require(config, "stages"))
  if "distill_ar" not in stages:
    return
  # (a run with stage 'rehearsal_data' points ar_root at its miniature AR:
  # data.rehearsal.with_paths, before the run starts)
  if not str(require(config, "evaluate.ar_root")) and "rehearsal_data" not in stages:
    raise ConfigError(
        "stage 'distill_ar' (AR's distillation pass, Table 1's OUR row) needs the AR "
        "folder: set config.evaluate.ar_root, or drop 'distill_ar' from config.stages"
    )
  from deocc_jax.data import ar_distillation

  a = require(config, "distill_ar")
  try:
    ar_distillation.check_split(tuple(a.train_images), tuple(a.teacher_images))
    for subset in ("sunglasses", "scarf"):  # AR's rank-1 probes need images left
      ar_distillation.probe_indices(subset, tuple(a.train_images))
  except ValueError as e:
    raise ConfigError(str(e)) from e


# the stages that evaluate on config.evaluate.split's held-out identities
EVALUATING_STAGES = ("evaluate", "ablation", "teacher_study", "lambda_sweep")


def _validate_held_out_split(config: ConfigDict) -> None:
  """The synthetic source's held-out split is checked before any stage runs
  (a typo would otherwise fail only when the evaluation reaches it)."""
  if not set(require(config, "stages")) & set(EVALUATING_STAGES):
    return
  if not bool(require(config, "evaluate.held_out")):
    return
  if str(require(config, "data.source")) != "synthetic":
    return
  from deocc_jax.data.pipeline import SPLITS

  held_out = tuple(x for x in SPLITS if x != "train")
  split = str(require(config, "evaluate.split"))
  if split not in held_out:
    raise ConfigError(
        f"config.evaluate.split is {split!r}; the synthetic source's held-out splits are "
        f"{list(held_out)}"
    )
