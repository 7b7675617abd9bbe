"""Decode a config's face splits once: ``deocc-prepare --config=... --out=DIR``.

Writes ``DIR/<split>/`` (``data/decoded_faces.py``: raw uint8 faces at
``config.data.resolution`` in array_record, plus their identities, landmarks
and paths) for the splits the config's stages read ('train', and the
evaluation's ``config.evaluate.split`` when it evaluates on held-out faces),
or ``--splits``. Train with ``--config.data.decoded_root=DIR``: every stage
then reads the same records without JPEG decoding and resizing (the host's
main cost per clean face at the paper's sizes). A split is written to a
folder beside its target and renamed when complete; one whose manifest
already describes the config's records is kept (``--overwrite`` writes it
again).

    deocc-prepare --config=configs/paper_celeba.py --config.data.root=/data/celeba \\
        --out=/data/celeba_decoded_256
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from deocc_jax import cli
from deocc_jax.runs import workdir as workdir_lib
from deocc_jax.training import decode_splits

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_OUT = flags.DEFINE_string("out", None, "Folder for the decoded splits (DIR/<split>/).")
_SPLITS = flags.DEFINE_list("splits", None, "Splits to write (default: those the stages read).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Write splits that are already there again.")


def main(argv) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}")

  def job() -> None:
    config = cli.config_value(_CONFIG)
    if config is None or not _OUT.value:
      cli.fail("--config and --out are required")
    workdir_lib.validate_config(config)
    decode_splits.prepare(config, _OUT.value, _SPLITS.value, _OVERWRITE.value)

  cli.run_or_exit(job)


def console_main() -> None:
  """The ``deocc-prepare`` console command (``python -m deocc_jax.prepare``)."""
  cli.run_console(main, __name__)


if __name__ == "__main__":
  console_main()
