"""Galleries of embedded images (``infer embed``'s .npz) and identification matches."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zipfile
from typing import NamedTuple

import numpy as np

from deocc_jax.data.dataset_formats import DatasetFormatError

__all__ = ["Match", "Gallery"]


class Match(NamedTuple):
  """A gallery identity and its score for one probe (``FaceRecognizer.identify``)."""

  label: str
  score: float


@dataclasses.dataclass(frozen=True)
class Gallery:
  """Embedded images: ``labels`` are first-level subfolder names ('' at the root)."""

  embeddings: np.ndarray  # (N, D) float32
  paths: tuple[str, ...]  # relative to the folder, '/' separators
  labels: tuple[str, ...]
  skipped: tuple[tuple[str, str], ...] = ()  # (relative path, error) left out
  recognizer: str = ""
  input_kind: str = ""
  source: str = ""  # where it came from (folder or .npz)
  # the restored step of each model that embedded it ({} when not recorded)
  checkpoint_steps: dict[str, int] = dataclasses.field(default_factory=dict)

  def identities(self) -> tuple[str, ...]:
    """Identity key per image: the label, or the path for images at the root."""
    return tuple(lab if lab else p for lab, p in zip(self.labels, self.paths))

  def save(self, out_path: str) -> None:
    """Writes an .npz atomically (temporary file + ``os.replace``)."""
    out_path = os.fspath(out_path)
    d = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(d):
      raise FileNotFoundError(f"output folder does not exist: {d}")
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".npz", dir=d)
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(
            f,
            embeddings=np.asarray(self.embeddings, np.float32),
            paths=np.array(self.paths, dtype=str).reshape(-1),
            labels=np.array(self.labels, dtype=str).reshape(-1),
            skipped_paths=np.array([p for p, _ in self.skipped], dtype=str).reshape(-1),
            skipped_errors=np.array([e for _, e in self.skipped], dtype=str).reshape(-1),
            recognizer=np.array(self.recognizer),
            input_kind=np.array(self.input_kind),
            checkpoint_steps=np.array(json.dumps(dict(sorted(self.checkpoint_steps.items())))),
        )
      os.replace(tmp, out_path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise

  @classmethod
  def load(cls, path: str) -> Gallery:
    """Reads an .npz written by :meth:`save` / ``embed_folder``."""
    path = os.fspath(path)
    if not os.path.exists(path):
      raise FileNotFoundError(f"gallery file not found: {path}")
    try:
      with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise DatasetFormatError(f"{path}: not a gallery .npz ({e})") from e
    missing = [k for k in ("embeddings", "paths", "labels") if k not in data]
    if missing:
      raise DatasetFormatError(
          f"{path}: not a gallery .npz (missing {missing}; write one "
          f"with `python -m deocc_jax.infer embed`)"
      )
    emb = data["embeddings"]
    n = len(emb)
    if emb.ndim != 2 or len(data["paths"]) != n or len(data["labels"]) != n:
      raise DatasetFormatError(
          f"{path}: embeddings {emb.shape}, {len(data['paths'])} paths "
          f"and {len(data['labels'])} labels do not match"
      )
    return cls(
        emb.astype(np.float32),
        tuple(str(p) for p in data["paths"]),
        tuple(str(lab) for lab in data["labels"]),
        tuple(
            (str(p), str(e))
            for p, e in zip(data.get("skipped_paths", ()), data.get("skipped_errors", ()))
        ),
        str(data.get("recognizer", "")),
        str(data.get("input_kind", "")),
        path,
        _steps(data, path),
    )


def _steps(data: dict[str, np.ndarray], path: str) -> dict[str, int]:
  """The ``checkpoint_steps`` of a gallery file ({} for files written before they were recorded)."""
  if "checkpoint_steps" not in data:
    return {}
  try:
    steps = json.loads(str(data["checkpoint_steps"]))
    return {str(k): int(v) for k, v in steps.items()}
  except (ValueError, TypeError, AttributeError) as e:
    raise DatasetFormatError(f"{path}: unreadable checkpoint_steps ({e})") from e
