"""Entry point: ``python -m deocc_jax.main --config=configs/<name>.py --workdir=DIR``.

Runs the stages listed in ``config.stages`` in order. Any config field can
be overridden on the command line (``--config.data.resolution=32``).
"""

from __future__ import annotations

import os
from typing import Callable

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from deocc_jax.data import render

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs / checkpoints.")


class ConfigError(ValueError):
  """A config field is missing or has a bad value (names the key)."""


def require(config: ConfigDict, key: str):
  """``config.a.b`` by dotted key, with an error naming the missing key."""
  node = config
  for part in key.split("."):
    if not isinstance(node, ConfigDict) or part not in node:
      raise ConfigError(f"config is missing required field '{key}'")
    node = node[part]
  return node


def _render_data(config: ConfigDict, workdir: str) -> None:
  if require(config, "data.source") != "synthetic":
    raise ConfigError("stage 'render_data' renders the synthetic set; "
                      f"config.data.source is {config.data.source!r}")
  render.render_dataset(
      os.path.join(workdir, "data"),
      identities=int(require(config, "data.identities")),
      images_per_identity=int(require(config, "data.images_per_identity")),
      resolution=int(require(config, "data.resolution")),
      seed=int(require(config, "data.seed")),
      per_category=int(require(config, "render.per_category")),
      columns=int(require(config, "render.columns")),
      stats_examples=int(require(config, "render.stats_examples")),
      coverage_range=tuple(require(config, "data.coverage_range")),
      categories=tuple(require(config, "data.categories")),
      mask_library=str(require(config, "data.mask_library")))


STAGES: dict[str, Callable[[ConfigDict, str], None]] = {
    "render_data": _render_data,
}


def run(config: ConfigDict, workdir: str) -> None:
  stages = list(require(config, "stages"))
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ConfigError(f"config.stages has unknown stage(s) {unknown}; "
                      f"available: {sorted(STAGES)}")
  os.makedirs(workdir, exist_ok=True)
  for stage in stages:
    logging.info("stage %s", stage)
    print(f"== stage {stage} ==", flush=True)
    STAGES[stage](config, workdir)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/synthetic.py")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
