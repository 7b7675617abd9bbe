"""Config bodies shared by the experiment files in ``configs/``.

``base`` assembles every field with its default (the embedded synthetic
default) from one builder per section (``base``, ``recognizer_sections``,
``completion_sections``, ``evaluation_sections``; shared field groups in
``fields``) and locks it; ``paper`` holds the paper's setting on top of it. An experiment file's
``get_config(arg)`` takes big_vision-style variants after a colon
(``--config=configs/synthetic.py:cpu``; several joined by commas), applied
with :func:`apply_variants`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import ml_collections

from deocc_jax.errors import ConfigError

Variant = Callable[[ml_collections.ConfigDict], None]


def require(config: ml_collections.ConfigDict, key: str) -> Any:
  """``config.a.b`` by dotted key, with an error naming the missing key."""
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ConfigError(f"config is missing required field '{key}'")
    node = node[part]
  return node


def apply_variants(
    config: ml_collections.ConfigDict, arg: str | None, variants: Mapping[str, Variant], source: str
) -> ml_collections.ConfigDict:
  """Applies the comma-separated ``arg`` variants of ``source``, in order.

  An unknown name raises ``ValueError`` naming the file and the known ones.
  """
  names = [n.strip() for n in (arg or "").split(",") if n.strip()]
  unknown = [n for n in names if n not in variants]
  if unknown:
    raise ValueError(
        f"{source}: unknown config variant(s) {unknown}; known: "
        f"{sorted(variants)} (e.g. --config={source}:{sorted(variants)[0]})"
    )
  for name in names:
    variants[name](config)
  return config
