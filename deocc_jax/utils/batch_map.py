"""Mapping a batch function over data in batches sharded over a device mesh.

The one place where a batch function is jitted with its inputs sharded along
the mesh's ``'data'`` axis and its outputs replicated (:class:`ShardedFn`),
where batches are padded to a size the mesh divides, and where each host's
rows are assembled into the global batch (``sharding.host_batch_to_global``).
Two drivers share it:

* :class:`BucketedBatchMap` (inference): in-memory arrays of one process, in
  chunks padded to power-of-two sizes (few compilations).
* :func:`map_host_batches` (the teacher extraction): a per-host loader's
  batches, every host of a multi-host job; the other entries of each global
  batch (record indices, labels) are gathered back to every host.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from deocc_jax.utils import sharding as shard_lib

__all__ = [
    "round_up",
    "pad_rows",
    "per_host_batch",
    "ShardedFn",
    "BucketedBatchMap",
    "map_host_batches",
]


def round_up(n: int, multiple: int) -> int:
  """The smallest multiple of ``multiple`` that is >= ``n``."""
  return -(-int(n) // int(multiple)) * int(multiple)


def pad_rows(arrays: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
  """Pads each (k, ...) array to ``size`` rows by repeating its last row."""
  return [
      a if len(a) >= size else np.concatenate([a, np.repeat(a[-1:], size - len(a), axis=0)])
      for a in arrays
  ]


def per_host_batch(batch_size: int, mesh: Mesh) -> int:
  """Each host's share of a global ``batch_size`` (it must divide over every device)."""
  hosts = jax.process_count()
  if batch_size % (hosts * len(mesh.local_devices)):
    raise ValueError(
        f"batch_size {batch_size} must be divisible by hosts x local devices "
        f"= {hosts * len(mesh.local_devices)}"
    )
  return batch_size // hosts


class ShardedFn:
  """``fn`` jitted with its ``num_args`` inputs sharded along ``'data'`` and its
  outputs replicated over ``mesh`` (``mesh=None``: a plain jit on the default device).

  ``multiple``: the global batch sizes must be multiples of it (the mesh's device count).
  """

  def __init__(self, fn: Callable[..., Any], mesh: Mesh | None = None, num_args: int = 1):
    self.mesh = mesh
    if mesh is None:
      self.multiple = 1
      self.jit = jax.jit(fn)
    else:
      self.multiple = int(mesh.devices.size)
      data = shard_lib.data_sharding(mesh)
      self.jit = jax.jit(
          fn, in_shardings=(data,) * num_args, out_shardings=shard_lib.replicated(mesh)
      )

  def assemble(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Every host's rows -> the global batch (``jax.Array`` s sharded along ``'data'``);
    without a mesh, the arrays as they are."""
    if self.mesh is None:
      return dict(host_batch)
    return shard_lib.host_batch_to_global(dict(host_batch), self.mesh)

  def __call__(self, *args: Any) -> Any:
    """The jitted ``fn`` on global arrays (dispatched asynchronously)."""
    return self.jit(*args)


class BucketedBatchMap:
  """Runs a batch function of ``num_args`` arrays (one process) in chunks of at
  most ``batch_size`` rows, each padded to a power-of-two multiple of the mesh's
  device count (few compilations), sharded over ``mesh``; returns float32 numpy."""

  def __init__(
      self, fn: Callable[..., Any], num_args: int, mesh: Mesh | None = None, batch_size: int = 32
  ):
    self.fn = ShardedFn(fn, mesh, num_args)
    m = self.fn.multiple
    self.multiple = m
    self.max_batch = max(m, round_up(batch_size, m))

  def _bucket(self, n: int) -> int:
    b = self.multiple
    while b < n:
      b *= 2
    return min(b, self.max_batch)  # n <= max_batch

  def __call__(self, *arrays: np.ndarray) -> np.ndarray:
    n = len(arrays[0])
    outs = []
    for start in range(0, n, self.max_batch):
      chunk = [np.asarray(a[start : start + self.max_batch], np.float32) for a in arrays]
      k = len(chunk[0])
      chunk = pad_rows(chunk, self._bucket(k))
      batch = self.fn.assemble({str(i): c for i, c in enumerate(chunk)})
      outs.append(np.asarray(jax.device_get(self.fn(*batch.values())))[:k])
    return np.concatenate(outs).astype(np.float32)


def map_host_batches(
    fn: ShardedFn, host_batches: Iterable[Mapping[str, np.ndarray]], inputs: Sequence[str]
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
  """Runs ``fn`` on the global batches formed by every host's ``host_batches``.

  Every host passes its own loader's batches (the same number, each of the same
  size on every host, divisible by its local devices). Yields, per batch,
  ``fn``'s output on the entries ``inputs`` (in that order) and the other
  entries of the global batch, all as numpy arrays, the same on every host.
  """
  for host_batch in host_batches:
    batch = fn.assemble(host_batch)
    out = fn(*(batch[k] for k in inputs))
    rest = {
        k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
        for k, v in batch.items()
        if k not in inputs
    }
    yield np.asarray(jax.device_get(out)), rest
