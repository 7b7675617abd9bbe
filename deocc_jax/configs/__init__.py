"""Config bodies shared by the experiment files in ``configs/``.

``base`` holds every field with its default (the embedded synthetic default),
``paper`` the paper's setting on top of it. An experiment file's
``get_config(arg)`` takes big_vision-style variants after a colon
(``--config=configs/synthetic.py:cpu``; several joined by commas), applied
with :func:`apply_variants`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import ml_collections

Variant = Callable[[ml_collections.ConfigDict], None]


def apply_variants(config: ml_collections.ConfigDict, arg: str | None,
                   variants: Mapping[str, Variant], source: str) -> ml_collections.ConfigDict:
  """Applies the comma-separated ``arg`` variants of ``source``, in order.

  An unknown name raises ``ValueError`` naming the file and the known ones.
  """
  names = [n.strip() for n in (arg or "").split(",") if n.strip()]
  unknown = [n for n in names if n not in variants]
  if unknown:
    raise ValueError(f"{source}: unknown config variant(s) {unknown}; known: "
                     f"{sorted(variants)} (e.g. --config={source}:{sorted(variants)[0]})")
  for name in names:
    variants[name](config)
  return config
