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

import os
import time

from absl import flags
from ml_collections import ConfigDict, config_flags

from deocc_jax import cli
from deocc_jax.configs import require
from deocc_jax.data import decoded_faces
from deocc_jax.data.dataset_formats import DatasetFormatError
from deocc_jax.training import stages
from deocc_jax.training import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_OUT = flags.DEFINE_string("out", None, "Folder for the decoded splits (DIR/<split>/).")
_SPLITS = flags.DEFINE_list("splits", None, "Splits to write (default: those the stages read).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Write splits that are already there again.")


def splits_read(config: ConfigDict) -> list[str]:
  """The splits the config's stages read: 'train', and the held-out split
  when a stage evaluates on it."""
  out = ["train"]
  evaluating = set(require(config, "stages")) & set(workdir_lib.EVALUATING_STAGES)
  if evaluating and bool(require(config, "evaluate.held_out")):
    split = str(require(config, "evaluate.split"))
    if split not in out:
      out.append(split)
  return out


def prepare(config: ConfigDict, out: str, splits: list[str] | None = None, overwrite=False):
  """Writes each split of ``splits`` (default :func:`splits_read`) under ``out``;
  returns {split: 'written' | 'kept'}."""
  done = {}
  for split in splits or splits_read(config):
    target = os.path.join(out, split)
    want = stages.describe_source(config, split)
    if not overwrite and os.path.exists(os.path.join(target, decoded_faces.MANIFEST)):
      try:
        decoded_faces.DecodedFaces(target, expect=want)
        done[split] = "kept"
        print(f"{target}: already holds these faces (kept; --overwrite writes them again)")
        continue
      except (DatasetFormatError, FileNotFoundError) as e:
        raise DatasetFormatError(f"{e} (or pass --overwrite)") from None
    source = stages.make_source(config, split, decoded=False)
    t0, last = time.perf_counter(), [0.0]

    def progress(i: int, n: int) -> None:
      now = time.perf_counter()
      if i == n or now - last[0] > 10:
        last[0] = now
        print(f"{split}: {i}/{n} faces ({i / max(now - t0, 1e-9):.0f}/s)", flush=True)

    decoded_faces.write(source, target, want, progress=progress)
    done[split] = "written"
  print(f"train with --config.data.decoded_root={os.path.abspath(out)}")
  return done


def main(argv) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}")

  def job() -> None:
    config = cli.config_value(_CONFIG)
    if config is None or not _OUT.value:
      cli.fail("--config and --out are required")
    workdir_lib.validate_config(config)
    prepare(config, _OUT.value, _SPLITS.value, _OVERWRITE.value)

  cli.run_or_exit(job)


def console_main() -> None:
  """The ``deocc-prepare`` console command (``python -m deocc_jax.prepare``)."""
  cli.run_console(main, __name__)


if __name__ == "__main__":
  console_main()
