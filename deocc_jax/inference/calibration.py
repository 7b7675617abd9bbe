"""The threshold calibration of a run: ``<workdir>/results/calibration.json``
(written by ``python -m deocc_jax.evaluate``), read by :class:`FaceRecognizer`."""

from __future__ import annotations

import json
import os
from typing import Any

from etils import epath

__all__ = ["calibration_path", "read_calibration", "calibrated_threshold"]


def calibration_path(workdir: str) -> str:
  return os.path.join(workdir, "results", "calibration.json")


def read_calibration(workdir: str) -> dict[str, Any]:
  """``<workdir>/results/calibration.json`` (written by ``python -m deocc_jax.evaluate``);
  ``workdir`` may be a local path or an epath URI (``gs://...``)."""
  path = calibration_path(workdir)
  if not epath.Path(path).exists():
    raise FileNotFoundError(
        f"no threshold calibration at {path}: run the evaluation first "
        f"(`python -m deocc_jax.evaluate --config=<the run's config> --workdir={workdir}`) "
        f"or pass an explicit threshold (threshold= / --threshold=)"
    )
  try:
    cal = json.loads(epath.Path(path).read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: cannot read the calibration ({e})") from e
  if not isinstance(cal, dict) or not isinstance(cal.get("thresholds"), dict):
    raise ValueError(f"{path}: no 'thresholds' table; re-run `python -m deocc_jax.evaluate`")
  return cal


def calibrated_threshold(
    cal: dict[str, Any], workdir: str, recognizer: str, kind: str, resolution: int
) -> float:
  """``thresholds[recognizer][kind]`` of the calibration ``cal`` of ``workdir``, which
  must have been calibrated at the models' ``resolution``."""
  path = calibration_path(workdir)
  if "resolution" in cal and int(cal["resolution"]) != resolution:
    raise ValueError(
        f"{path} was calibrated at resolution {cal['resolution']}, the "
        f"config's is {resolution}: re-run `python -m "
        f"deocc_jax.evaluate` or check --config"
    )
  per = cal["thresholds"].get(recognizer)
  if per is None:
    raise ValueError(
        f"{path} has no thresholds for recognizer {recognizer!r} (it has "
        f"{sorted(cal['thresholds'])}); re-run `python -m deocc_jax.evaluate` "
        f"or pass threshold="
    )
  if kind not in per:
    raise ValueError(
        f"{path} has no {recognizer!r} threshold for input {kind!r} (it has "
        f"{sorted(per)}); pass input_kind= or threshold="
    )
  return float(per[kind])
