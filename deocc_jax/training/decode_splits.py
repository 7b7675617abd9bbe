"""Decode a config's face splits once (``deocc-prepare``, ``deocc_jax/prepare.py``).

Writes ``out/<split>/`` (``data/decoded_faces.py``) for the splits the config's
stages read, checked against the config's description of its records
(``factories.describe_source``), so that ``config.data.decoded_root=out`` reads
the same faces without decoding them again.
"""

from __future__ import annotations

import os
import time

from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.data import decoded_faces
from deocc_jax.data.dataset_formats import DatasetFormatError
from deocc_jax.runs import factories
from deocc_jax.runs import workdir as workdir_lib


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
    want = factories.describe_source(config, split)
    if not overwrite and os.path.exists(os.path.join(target, decoded_faces.MANIFEST)):
      try:
        decoded_faces.DecodedFaces(target, expect=want)
        done[split] = "kept"
        print(f"{target}: already holds these faces (kept; --overwrite writes them again)")
        continue
      except (DatasetFormatError, FileNotFoundError) as e:
        raise DatasetFormatError(f"{e} (or pass --overwrite)") from None
    source = factories.make_source(config, split, decoded=False)
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
