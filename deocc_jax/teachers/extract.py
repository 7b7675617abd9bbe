"""Offline teacher jobs: embeddings of a data set and identity centroids (Eq. 18).

Sharded over every device of every host: each host reads its own shard of the
records (grain ``ShardByJaxProcess``), the per-host batches form one global
``jax.Array`` sharded along ``'data'``, the jitted embedding runs on all
devices, and the results are gathered back with the record indices
(``utils.batch_map.map_host_batches``), so the output is in record order
whatever the device / host count.

Outputs (``write_teacher_outputs``): ``embeddings.npy`` (N, D) float32,
``labels.npy`` (N,), ``centroids.npy`` (C, D) — f_id of Eq. 18, the mean
teacher embedding of each identity — ``counts.npy`` (C,) and
``metadata.json``.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Callable

import grain.python as grain
import jax
import numpy as np
from etils import epath
from jax.sharding import Mesh

from deocc_jax.data import pipeline as pipe
from deocc_jax.utils import batch_map


class _ReadIndexed(grain.MapTransform):
  """Index -> {'image', 'label', 'index'}; padding indices (>= n) re-read the
  last record and carry index -1 so they are dropped after gathering."""

  def __init__(self, source, image_key: str):
    self.source = source
    self.image_key = image_key
    self.n = len(source)

  def map(self, index):
    i = int(index)
    rec = self.source[min(i, self.n - 1)]
    return {
        "image": np.asarray(rec[self.image_key]),
        "label": np.int32(rec["identity"]),
        "index": np.int64(i if i < self.n else -1),
    }


class _IndexSource:
  """A trivial source of record indices (the reading happens in the map)."""

  def __init__(self, n: int):
    self.n = n

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> int:
    return int(i)

  def __repr__(self) -> str:
    return f"_IndexSource({self.n})"


def extract_embeddings(
    embed_fn: Callable[[jax.Array], jax.Array],
    source: Any,
    batch_size: int,
    mesh: Mesh,
    image_key: str = "image",
    worker_count: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """Embeds every record of ``source``; returns (embeddings, labels) in order.

  ``embed_fn(images)`` maps a global (B, H, W, C) batch to (B, D); it is
  jitted here with the batch sharded over ``mesh``. ``batch_size`` is global.
  """
  n = len(source)
  per_host = batch_map.per_host_batch(batch_size, mesh)
  # Pad the index space so every host gets the same number of full batches.
  padded = batch_map.round_up(n, batch_size)
  sampler = grain.IndexSampler(
      padded, grain.ShardByJaxProcess(drop_remainder=True), shuffle=False, num_epochs=1, seed=0
  )

  loader = grain.DataLoader(
      data_source=_IndexSource(padded),
      sampler=sampler,
      operations=[_ReadIndexed(source, image_key), grain.Batch(per_host, drop_remainder=False)],
      worker_count=worker_count,
      # the records are read by the map above, in this thread; reader threads
      # would only poll the index source and contend with the embedding step
      read_options=pipe.read_options(0),
  )
  fn = batch_map.ShardedFn(embed_fn, mesh)
  embs, labels, indices = [], [], []
  for e, rest in batch_map.map_host_batches(fn, loader, inputs=("image",)):
    embs.append(e)
    indices.append(rest["index"])
    labels.append(rest["label"])
  emb = np.concatenate(embs)
  idx = np.concatenate(indices)
  lab = np.concatenate(labels)
  keep = idx >= 0
  order = np.argsort(idx[keep], kind="stable")
  emb, idx, lab = emb[keep][order], idx[keep][order], lab[keep][order]
  if not np.array_equal(idx, np.arange(n)):
    raise RuntimeError(f"extraction covered {len(np.unique(idx))} of {n} records")
  return emb.astype(np.float32), lab


def identity_centroids_np(
    embeddings: np.ndarray, labels: np.ndarray, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Eq. 18: f_id = mean teacher embedding of identity id; (centroids, counts)."""
  labels = np.asarray(labels, np.int64)
  c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
  if labels.min(initial=0) < 0 or labels.max(initial=-1) >= c:
    raise ValueError(f"labels must lie in [0, {c}), got range [{labels.min()}, {labels.max()}]")
  sums = np.zeros((c, embeddings.shape[1]), np.float64)
  np.add.at(sums, labels, embeddings.astype(np.float64))
  counts = np.bincount(labels, minlength=c)
  cent = sums / np.maximum(counts, 1)[:, None]
  return cent.astype(np.float32), counts


def _save_npy(path: epath.Path, array: np.ndarray) -> None:
  buf = io.BytesIO()
  np.save(buf, array)
  path.write_bytes(buf.getvalue())


def _load_npy(path: epath.Path) -> np.ndarray:
  return np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)


def write_teacher_outputs(
    out_dir: Any,
    embeddings: np.ndarray,
    labels: np.ndarray,
    metadata: dict[str, Any],
    num_classes: int | None = None,
) -> dict:
  """Writes embeddings, labels, centroids (Eq. 18), counts and metadata atomically.

  ``out_dir`` is a local path or any ``etils.epath`` URI (``gs://...``).
  Locally the files go to ``<out_dir>.tmp``, renamed onto ``out_dir``; on an
  object store (no directory rename) the old outputs are deleted, then each
  file is written as one object, ``metadata.json`` last, so a reader never
  takes an interrupted write for a complete one.
  """
  if jax.process_index() != 0:
    return {}
  cent, counts = identity_centroids_np(embeddings, labels, num_classes)
  meta = {
      **metadata,
      "num_records": int(len(labels)),
      "embedding_dim": int(embeddings.shape[1]),
      "num_classes": int(len(counts)),
  }
  arrays = {
      "embeddings.npy": embeddings,
      "labels.npy": labels,
      "centroids.npy": cent,
      "counts.npy": counts,
  }
  text = json.dumps(meta, indent=2)
  if "://" in os.fspath(out_dir):
    out = epath.Path(out_dir)
    if out.exists():
      out.rmtree()
    out.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
      _save_npy(out / name, a)
    (out / "metadata.json").write_text(text)
    return meta
  out_dir = os.fspath(out_dir)
  tmp = out_dir.rstrip("/") + ".tmp"
  os.makedirs(tmp, exist_ok=True)
  for name, a in arrays.items():
    np.save(os.path.join(tmp, name), a)
  with open(os.path.join(tmp, "metadata.json"), "w") as f:
    f.write(text)
  if os.path.exists(out_dir):
    import shutil

    shutil.rmtree(out_dir)
  os.replace(tmp, out_dir)
  return meta


def load_teacher_outputs(out_dir: Any) -> dict[str, Any]:
  """Reads what :func:`write_teacher_outputs` wrote (local path or epath URI)."""
  out = epath.Path(out_dir)
  for name in ("embeddings.npy", "labels.npy", "centroids.npy", "metadata.json"):
    if not (out / name).exists():
      raise FileNotFoundError(f"teacher outputs incomplete: {out / name} missing")
  meta = json.loads((out / "metadata.json").read_text())
  return {
      "embeddings": _load_npy(out / "embeddings.npy"),
      "labels": _load_npy(out / "labels.npy"),
      "centroids": _load_npy(out / "centroids.npy"),
      "counts": _load_npy(out / "counts.npy"),
      "metadata": meta,
  }
