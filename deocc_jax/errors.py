"""Exceptions shared by every subpackage (no imports of the package itself)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
  """A config field is missing or has a bad value (names the key)."""
