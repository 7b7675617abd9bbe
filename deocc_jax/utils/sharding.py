"""Device mesh, shardings and per-host batch assembly.

One 1-D mesh axis ``'data'`` over every device of every host. Batches are
sharded along it (``NamedSharding(mesh, P('data'))``); parameters and
optimizer state are replicated by default, or FSDP-style sharded along their
largest divisible axis (``fsdp=True``), which XLA all-gathers inside the
jitted step.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None, axis: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh over all (or the first ``num_devices``) devices."""
  devices = jax.devices()
  if num_devices is not None and num_devices > 0:
    if num_devices > len(devices):
      raise ValueError(f"mesh asks for {num_devices} devices, only {len(devices)} exist")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (axis,))


def data_sharding(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
  return NamedSharding(mesh, P(axis))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], n: int, min_size: int = 2**14, axis: str = DATA_AXIS) -> P:
  """Shards the largest dimension divisible by ``n`` (small arrays replicated)."""
  if int(np.prod(shape, dtype=np.int64)) < min_size or n == 1:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % n == 0:
      spec = [None] * len(shape)
      spec[dim] = axis
      return P(*spec)
  return P()


def state_shardings(
    abstract_state: Any, mesh: Mesh, fsdp: bool = False, axis: str = DATA_AXIS
) -> Any:
  """NamedShardings for a pytree of arrays / ShapeDtypeStructs."""
  n = mesh.shape[axis]

  def one(x):
    shape = tuple(getattr(x, "shape", ()))
    spec = fsdp_spec(shape, n, axis=axis) if fsdp else P()
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map(one, abstract_state)


def host_batch_to_global(
    batch: dict[str, np.ndarray], mesh: Mesh, axis: str = DATA_AXIS
) -> dict[str, jax.Array]:
  """Assembles the global batch from each host's local part.

  Every host passes its own ``batch_size / process_count`` examples (numpy);
  the result is a global ``jax.Array`` sharded along ``axis``.
  """
  sharding = data_sharding(mesh, axis)
  n_local = len(mesh.local_devices)
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.ndim == 0:
      raise ValueError(f"batch[{k!r}] is a scalar; every batch entry needs a batch axis")
    if v.shape[0] % n_local:
      raise ValueError(
          f"batch[{k!r}] has {v.shape[0]} examples on this host, not "
          f"divisible by its {n_local} local devices"
      )
    out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out


def put_global(tree: Any, shardings: Any) -> Any:
  """Host values (the same on every process, e.g. a frozen teacher's
  parameters) as global arrays with the given shardings."""

  def one(x, sh):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])

  return jax.tree_util.tree_map(one, tree, shardings)
