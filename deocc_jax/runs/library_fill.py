"""Table 1's RPCA and GL completions as evaluation inputs (columns of every table).

Input keys ``rpca_fill`` (robust PCA, :mod:`deocc_jax.baselines.rpca`) and
``gl_fill`` (Graph-Laplace, :mod:`deocc_jax.baselines.graph_laplace`), opt-in
by naming them in ``config.evaluate.inputs``. Both complete a face from a
*library* of aligned clean faces: the first
``config.evaluate.classical_fill.library_faces`` faces of the run's *training*
split (the identities the models trained on, never an evaluation identity),
as the classical rows (:mod:`~deocc_jax.runs.classical_rows`) and the
mean face are. Like the other fills they see the true mask where the set has
one, the segmenter's otherwise, and return the pixels outside the hole unchanged.

Cost per probe: RPCA decomposes a ``(1 + library_faces) x pixels`` matrix, one
thin SVD (a QR of ``pixels x (1 + library_faces)``) per sweep, up to
``rpca_max_iters`` sweeps (each probe stops at ``rpca_tol``); GL ranks the
library on the visible pixels and runs ``gl_num_iters`` conjugate-gradient
sweeps of a 4-neighbour stencil, so RPCA dominates.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from ml_collections import ConfigDict

from deocc_jax.baselines import graph_laplace, rpca
from deocc_jax.configs import require
from deocc_jax.data.pipeline import to_unit_range
from deocc_jax.errors import ConfigError
from deocc_jax.utils import sharding

# input key -> display name (the order of the tables' columns)
KEYS = {"rpca_fill": "RPCA fill", "gl_fill": "GL fill"}

FillFn = Callable[[jax.Array, jax.Array], jax.Array]  # (masked, mask) -> completed


def library_faces(source: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
  """(faces (n, H, W, 3) float32 in [-1, 1], identities (n,)) of the first ``n``
  records of ``source`` (all of them when it has fewer)."""
  n = min(int(n), len(source))
  if n < 1:
    raise ConfigError(
        f"config.evaluate.classical_fill.library_faces: the training split has {len(source)} "
        "faces; the RPCA / GL fills need at least 1"
    )
  records = [source[i] for i in range(n)]
  faces = np.stack([to_unit_range(np.asarray(r["image"])) for r in records]).astype(np.float32)
  return faces, np.array([r["identity"] for r in records])


def wanted(config: ConfigDict) -> tuple[str, ...]:
  """The library fills ``config.evaluate.inputs`` names, in :data:`KEYS` order."""
  inputs = tuple(str(k) for k in require(config, "evaluate.inputs"))
  return tuple(k for k in KEYS if k in inputs)


def make_fills(
    config: ConfigDict, make_source: Callable[[], Any], resolution: int
) -> tuple[dict[str, FillFn], np.ndarray | None]:
  """({input key: (masked, mask) -> completed}, the library faces or None) of
  the fills :func:`wanted` names, the library read from ``make_source()`` (the
  run's training split); nothing is read when none is wanted."""
  keys = wanted(config)
  if not keys:
    return {}, None
  c = require(config, "evaluate.classical_fill")
  library, _ = library_faces(make_source(), int(c.library_faces))
  if library.shape[1:3] != (resolution, resolution):
    raise ConfigError(
        f"config.evaluate.classical_fill: the training split's faces are {library.shape[1:3]}, "
        f"the run's models {resolution} px"
    )
  lib = jax.numpy.asarray(library)
  out: dict[str, FillFn] = {}
  if "rpca_fill" in keys:
    iters, lam = int(c.rpca_max_iters), float(c.rpca_lambda)
    if iters < 1:
      raise ConfigError(f"config.evaluate.classical_fill.rpca_max_iters={iters} must be >= 1")
    out["rpca_fill"] = functools.partial(
        rpca.rpca_fill,
        library=lib,
        lam=lam if lam > 0 else None,
        tol=float(c.rpca_tol),
        max_iters=iters,
    )
  if "gl_fill" in keys:
    k, sigma = int(c.gl_neighbours), float(c.gl_edge_sigma)
    if not 1 <= k <= len(library):
      raise ConfigError(
          f"config.evaluate.classical_fill.gl_neighbours={k} must be in [1, {len(library)}] "
          f"(the library's faces)"
      )
    out["gl_fill"] = functools.partial(
        graph_laplace.graph_laplace_fill,
        library=lib,
        neighbours=k,
        ridge=float(c.gl_ridge),
        edge_sigma=sigma if sigma > 0 else None,
        num_iters=int(c.gl_num_iters),
    )
  return out, library


def per_device(fn: Callable[[jax.Array], jax.Array], mesh: Mesh | None) -> Callable:
  """``fn`` on one face at a time (``lax.map``), each device on its own rows
  (``shard_map`` over the data axis). Per face: RPCA's while loop stops at
  each face's own tolerance, and no linear algebra is batched: jaxlib's
  batched CPU LAPACK kernels split a batch over the thread pool that runs
  the host devices' programs, which deadlocks with 8 host devices on 2 cores.
  Per device: no collective inside the loop."""

  def one_by_one(z: jax.Array) -> jax.Array:
    return jax.lax.map(lambda x: fn(x[None])[0], z)

  if mesh is None:
    return one_by_one
  spec = P(sharding.DATA_AXIS)
  return jax.shard_map(one_by_one, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
