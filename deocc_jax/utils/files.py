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
