"""The experiment configs shipped in the package (``--config`` files).

Each module has ``get_config(arg)`` (variants after a colon, see
:func:`deocc_jax.configs.apply_variants`). The repository's ``configs/*.py``
re-export them, so ``--config=configs/synthetic.py`` reads the same config
from a clone; from an installed wheel (no ``configs/`` folder) the command
lines find the packaged file by the same path or by its name
(``--config=synthetic:cpu``): :func:`resolve`.
"""

from __future__ import annotations

import os

NAMES = ("paper_celeba", "paper_rehearsal", "synthetic")


def packaged_path(name: str) -> str:
  """The packaged file of experiment ``name`` (one of :data:`NAMES`)."""
  if name not in NAMES:
    raise ValueError(f"unknown packaged config {name!r}; packaged: {list(NAMES)}")
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")


def resolve(spec: str) -> str:
  """A ``--config`` value -> the file to load, variants (``:arg``) kept.

  An existing file is used as given (a clone's ``configs/``, the user's own
  file). Otherwise ``configs/NAME.py``, ``NAME.py`` or ``NAME`` of a packaged
  experiment names the packaged file; anything else is returned unchanged
  (the loader then reports it missing).
  """
  path, sep, arg = spec.partition(":")
  if not path or os.path.exists(path):
    return spec
  head, name = os.path.split(path)
  name = name[:-3] if name.endswith(".py") else name
  if name in NAMES and os.path.normpath(head) in (".", "configs"):
    return packaged_path(name) + sep + arg
  return spec
