"""Exceptions shared by every subpackage (no imports of the package itself)."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "UnreadableCheckpointError",
]


class ConfigError(ValueError):
  """A config field is missing or has a bad value (names the key)."""


class CheckpointError(Exception):
  """Base of the checkpoint errors a user can fix (one line, names the step)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
  """No such checkpoint (step / 'latest' / 'best')."""


class UnreadableCheckpointError(CheckpointError, ValueError):
  """A checkpoint step exists (or should) but cannot be read."""
