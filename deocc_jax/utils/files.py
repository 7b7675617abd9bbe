"""File writing shared by every layer: one atomic writer, local or remote."""

from __future__ import annotations

import os
from typing import Any

from etils import epath


def is_remote(path: Any) -> bool:
  """True for URIs (``gs://...``): object stores, written as whole objects."""
  return "://" in os.fspath(path)


def write_atomic(path: Any, data: str | bytes) -> None:
  """Writes ``path`` completely or not at all (temporary file + rename
  locally; object stores write whole objects)."""
  path = epath.Path(path)
  raw = data.encode() if isinstance(data, str) else data
  if is_remote(path):
    path.write_bytes(raw)
    return
  tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
  with open(os.fspath(tmp), "wb") as f:
    f.write(raw)
    f.flush()
    os.fsync(f.fileno())
  os.replace(os.fspath(tmp), os.fspath(path))


class ProcessZeroError(RuntimeError):
  """Process 0 failed a write every process waits for (names what it was)."""


def on_process_0(fn: Any, what: str, error: type[Exception] = ProcessZeroError) -> None:
  """Runs ``fn`` (a write) on process 0 alone, then holds every process until
  it is done, so none reads the files before they exist; if it failed there,
  every process raises (process 0 its own error, the others ``error``: "process
  0 failed to <what>")."""
  import jax
  import numpy as np

  err: BaseException | None = None
  if jax.process_index() == 0:
    try:
      fn()
    except Exception as e:  # noqa: BLE001 -- re-raised below, after telling the others
      err = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    failed = int(multihost_utils.broadcast_one_to_all(np.int32(err is not None)))
    if failed and err is None:
      raise error(f"process 0 failed to {what} (see its error)")
  if err is not None:
    raise err
