"""Decoded faces: a split's records stored cropped, resized and decoded (uint8).

At the paper's sizes the host's cost per clean face is JPEG decoding and
resizing (about 1.6 of 1.9 ms per 256 px face on one core); reading the same
face already decoded from array_record is a copy (about 0.1 ms).
:func:`write` converts a face source once (per split, at the training
resolution); :class:`DecodedFaces` reads it back as the same records, bit for
bit. ``runs.factories.make_source`` returns it when
``config.data.decoded_root`` is set (``deocc-prepare`` writes that folder).

A split's folder:

* ``manifest.json``: ``format``, ``resolution``, ``records``, the shard files
  and ``source``: what the records were made from (data source, root, split,
  partition, resolution, seed, held-out identities, ...), checked against the
  config that reads them;
* ``index.npz``: ``identity`` (N,), ``landmarks`` (N, 5, 2) float32, ``path``
  (N,) and ``identity_names``: everything but the pixels;
* ``faces-KKKKK-of-MMMMM.array_record``: record i = face i's R x R x 3 bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable

import numpy as np

from deocc_jax.data.dataset_formats import DatasetFormatError

FORMAT = "deocc_jax decoded faces v1"
MANIFEST = "manifest.json"
INDEX = "index.npz"
# Faces barely compress (real photos, ~0.85-0.95 with the stock codecs) and a
# decompression costs 2-3x the read: stored raw, one face per chunk.
WRITER_OPTIONS = "group_size:1,uncompressed"


def write(
    source: Any,
    out_dir: str,
    description: dict[str, Any],
    records_per_shard: int = 20_000,
    progress: Callable[[int, int], None] | None = None,
) -> str:
  """Writes every record of ``source`` (``image`` (R, R, 3) uint8,
  ``landmarks`` (5, 2), ``identity``, ``path``) to ``out_dir``, atomically
  (a folder beside it, renamed when complete). ``description``: what the
  records are made from, stored as the manifest's ``source``."""
  n = len(source)
  if not n:
    raise ValueError(f"{source!r}: no records to write")
  out_dir = os.path.abspath(out_dir)
  tmp = f"{out_dir}.partial-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    _write_records(source, tmp, int(records_per_shard), description, progress)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  old = f"{out_dir}.replaced-{os.getpid()}"
  if os.path.exists(out_dir):
    os.replace(out_dir, old)  # the previous split stays whole until the new one is in place
  os.replace(tmp, out_dir)
  shutil.rmtree(old, ignore_errors=True)
  return out_dir


def _write_records(
    source: Any,
    tmp: str,
    records_per_shard: int,
    description: dict[str, Any],
    progress: Callable[[int, int], None] | None,
) -> None:
  from array_record.python.array_record_module import ArrayRecordWriter  # noqa: PLC0415

  n = len(source)
  shards = -(-n // records_per_shard)
  files = [f"faces-{k:05d}-of-{shards:05d}.array_record" for k in range(shards)]
  identity = np.zeros(n, np.int64)
  landmarks = np.zeros((n, 5, 2), np.float32)
  paths: list[str] = []
  shape = None
  for k, name in enumerate(files):
    writer = ArrayRecordWriter(os.path.join(tmp, name), WRITER_OPTIONS)
    for i in range(k * records_per_shard, min(n, (k + 1) * records_per_shard)):
      rec = source[i]
      image = np.asarray(rec["image"])
      if shape is None:
        shape = image.shape
      if image.dtype != np.uint8 or image.shape != shape or shape[-1] != 3:
        raise ValueError(
            f"{source!r} record {i} ({rec.get('path', '')}): image {image.shape} {image.dtype}, "
            f"expected {shape} uint8 like record 0"
        )
      writer.write(np.ascontiguousarray(image).tobytes())
      identity[i] = int(rec["identity"])
      landmarks[i] = np.asarray(rec["landmarks"], np.float32).reshape(5, 2)
      paths.append(str(rec.get("path", i)))
      if progress is not None:
        progress(i + 1, n)
    writer.close()
  names = getattr(source, "identity_names", None)
  if names is None:  # the synthetic split sources: global identity ids
    names = getattr(source, "identities", None)
  if names is not None and np.ndim(names) != 1:
    names = None
  np.savez(
      os.path.join(tmp, INDEX),
      identity=identity,
      landmarks=landmarks,
      path=np.array(paths),
      identity_names=np.array([] if names is None else [str(x) for x in names]),
  )
  manifest = {
      "format": FORMAT,
      "resolution": int(shape[0]),
      "shape": list(shape),
      "records": n,
      "files": files,
      "source": description,
  }
  with open(os.path.join(tmp, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1)


class DecodedFaces:
  """A split written by :func:`write`, read record by record (a pipeline
  ``FaceSource``). With ``expect`` (the reader's description of the records
  it wants), a manifest that differs in any key is refused, naming it."""

  def __init__(self, root: str, expect: dict[str, Any] | None = None):
    self.root = root
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"{path}: no decoded faces here (write them with deocc-prepare, or unset "
          "config.data.decoded_root)"
      )
    try:
      with open(path) as f:
        m = json.load(f)
    except ValueError as e:
      raise DatasetFormatError(f"{path}: not JSON ({e})") from None
    if m.get("format") != FORMAT:
      raise DatasetFormatError(f"{path}: format {m.get('format')!r}, expected {FORMAT!r}")
    for key, want in (expect or {}).items():
      got = m["source"].get(key)
      if got != want:
        raise DatasetFormatError(
            f"{path}: these faces were written with {key}={got!r}, the config reads "
            f"{key}={want!r}; write them again with deocc-prepare for this config"
        )
    self.manifest = m
    self.shape = tuple(m["shape"])
    with np.load(os.path.join(root, INDEX)) as z:
      self.labels = z["identity"].astype(np.int32)
      self.landmarks = z["landmarks"]
      self.paths = [str(p) for p in z["path"]]
      names = z["identity_names"]
    self.identity_names = [str(x) for x in names] if len(names) else None
    n = int(m["records"])
    if len(self.labels) != n or self.landmarks.shape != (n, 5, 2):
      raise DatasetFormatError(
          f"{os.path.join(root, INDEX)}: {len(self.labels)} identities / landmarks "
          f"{self.landmarks.shape} for the manifest's {n} records"
      )
    import grain.python as grain  # noqa: PLC0415

    files = [os.path.join(root, f) for f in m["files"]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
      raise FileNotFoundError(f"{missing[0]}: a shard named by {path} is missing")
    self._records = grain.ArrayRecordDataSource(files)
    if len(self._records) != n:
      raise DatasetFormatError(
          f"{root}: the shards hold {len(self._records)} records, the manifest says {n}"
      )

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def num_classes(self) -> int:
    return int(self.labels.max()) + 1 if len(self.labels) else 0

  def __repr__(self) -> str:
    # grain validates a restored iterator against repr(source): keep it stable.
    return f"DecodedFaces({self.root!r}, records={len(self)}, shape={self.shape})"

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range [0, {len(self)})")
    data = self._records[index]
    if len(data) != int(np.prod(self.shape)):
      raise DatasetFormatError(
          f"{self.root}: record {index} has {len(data)} bytes, not {self.shape} uint8"
      )
    return {
        "image": np.frombuffer(data, np.uint8).reshape(self.shape).copy(),  # writable
        "landmarks": self.landmarks[index].copy(),
        "identity": np.int32(self.labels[index]),
        "path": self.paths[index],
    }
