"""Where a training stage draws its occluders: ``config.data.occluders``.

* ``'host'``: ``pipeline.MaskedPairTransform`` draws and composites each
  occluder in the grain stream (numpy, tens of ms per example at 256 px);
* ``'device'``: the host streams clean augmented faces
  (``device_occluders_stream.make_loader``: the same sampler and augmentation
  draws) and the loop occludes each sharded batch on the accelerator, right
  beside the jitted step (:class:`loop.Prepare`), from the stage's occluder
  bank (``device_occluders.build``, rendered once per stage with the data
  seed: the same bank on every process, passed to the jitted function as a
  replicated argument). Batch ``step`` is occluded with the key
  ``fold_in(fold_in(key(pipeline seed), stage salt), step)``: it depends on
  the seed, the stage and the step only, so a resumed run is bitwise the
  uninterrupted one.

Both give the steps the same batch keys, dtypes and ranges.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.data import device_occluders as do
from deocc_jax.data import device_occluders_bank as bank_lib
from deocc_jax.data import device_occluders_stream as stream
from deocc_jax.data import pipeline as pipe
from deocc_jax.runs import workdir
from deocc_jax.training import loop

MODES = workdir.OCCLUDER_MODES
mode = workdir.occluder_mode  # config.data.occluders, checked (ConfigError naming the key)


def stage_salt(stage: str) -> int:
  """A fixed per-stage integer (CRC-32 of the name, 31 bits) folded into the key."""
  return zlib.crc32(stage.encode()) & 0x7FFFFFFF


def bank_grid(resolution: int) -> int:
  """The bank's canonical grid side for faces of ``resolution`` px: 1.5 x the
  face side, within [64, 192] (192, the library's default, is 40 px per
  inter-ocular distance: a 256 px face's; a finer grid only aliases and costs
  build time and device memory at small sizes)."""
  return int(min(192, max(64, -(-3 * int(resolution) // 16) * 8)))


@functools.lru_cache(maxsize=2)
def _host_bank(data_fields: tuple, grid: int, seed: int) -> bank_lib.HostBank:
  """The rendered bank (numpy), cached across the stages of one process."""
  data = ConfigDict(dict(data_fields))
  return bank_lib.build_bank(pipe.mask_config_from_data(data), bank_lib.BankSizes(grid=grid), seed)


BANK_FIELDS = (
    "categories",
    "coverage_range",
    "mask_library",
    "library_prob",
    "face_mask_prob",
    "photometric",
)


def build_bank(config: ConfigDict) -> do.Bank:
  """The occluder bank of ``config.data`` (MaskConfig fields, the data seed)."""
  d = require(config, "data")
  fields = tuple((k, _hashable(d[k])) for k in BANK_FIELDS)
  hb = _host_bank(fields, bank_grid(int(d.resolution)), int(d.seed))
  return do.to_device(hb)


def _hashable(v: Any) -> Any:
  return tuple(v) if isinstance(v, (list, tuple)) else v


def prepare(batch: dict, step: jax.Array, args: tuple) -> dict:
  """The stages' device half ``(batch, step, (bank, seed, salt)) -> batch`` (see the
  module doc). Seed and salt are arguments, not constants: stages that keep the
  same batch keys share one compiled program."""
  bank, seed, salt = args
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), salt), step)
  return stream.prepare_batch(bank, batch, key)


def device_batches(
    config: ConfigDict,
    source: pipe.FaceSource,
    pcfg: pipe.PipelineConfig,
    stage: str,
    shard_options=None,
) -> loop.PreparedBatches:
  """The clean-face stream of a stage with its device half (occluders);
  ``shard_options`` (a ``grain.ShardOptions``) default: this process's shard."""
  batches = iter(stream.make_loader(source, pcfg, shard_options))
  seed, salt = np.uint32(int(pcfg.seed)), np.uint32(stage_salt(stage))
  half = loop.Prepare(prepare, (build_bank(config), seed, salt))
  return loop.PreparedBatches(batches, half)
