"""What ``infer`` writes besides its JSON: CSV rows of a result, the completed
faces and predicted masks (``--save_completions``)."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Sequence

import numpy as np

from deocc_jax.inference.results import Prepared

__all__ = ["csv_rows", "to_csv", "save_completions"]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dicts flattened with '_' (``mask_a: {source}`` -> ``mask_a_source``)."""
  out: dict[str, Any] = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}_"))
    elif not isinstance(v, list):
      out[f"{prefix}{k}"] = v
  return out


def csv_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
  """One row per decision / match / face / embedded image of an ``infer`` result."""
  cmd = result["command"]
  if cmd == "verify" and "pairs" in result:
    return [_flat(p) for p in result["pairs"]]
  if cmd == "verify":
    return [_flat(result)]
  if cmd == "identify":
    return [
        {"probe": p["probe"], "rank": k + 1, **m}
        for p in result["probes"]
        for k, m in enumerate(p["matches"])
    ]
  if cmd == "detect":
    rows = []
    for im in result["images"]:
      for k, f in enumerate(im["faces"]):
        lm = {
            f"lm{i + 1}_{ax}": v for i, pt in enumerate(f["landmarks"]) for ax, v in zip("xy", pt)
        }
        box = dict(zip(("box_x1", "box_y1", "box_x2", "box_y2"), f["box"]))
        rows.append(
            {
                "image": im["image"],
                "face": k,
                **box,
                "score": f["score"],
                "eye_distance": f["eye_distance"],
                **lm,
            }
        )
    return rows
  if cmd == "embed":
    rows = [{"path": p, "label": lab, "error": ""} for p, lab in result.get("embedded", [])]
    return rows + [{"path": s["path"], "label": "", "error": s["error"]} for s in result["skipped"]]
  raise ValueError(f"no CSV layout for command {cmd!r}")


def to_csv(result: dict[str, Any]) -> str:
  """The CSV text (header + rows) of an ``infer`` result."""
  rows = csv_rows(result)
  fields: list[str] = []
  for r in rows:
    fields += [k for k in r if k not in fields]
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
  w.writeheader()
  w.writerows(rows)
  return buf.getvalue()


def _png(path: str, x: np.ndarray) -> None:
  from PIL import Image

  Image.fromarray(x).save(path)


def save_completions(folder: str, sources: Sequence[str], prepared: Prepared) -> list[str]:
  """Writes, per face, ``<k>_<name>_completed.png`` (the face embedded, uint8
  RGB) and ``<k>_<name>_mask.png`` (the mask used: 255 = occluded); returns the paths."""
  os.makedirs(folder, exist_ok=True)
  out = []
  for k, src in enumerate(sources):
    stem = os.path.splitext(os.path.basename(src))[0] or "face"
    face = np.clip(np.round((prepared.completed[k] + 1.0) * 127.5), 0, 255).astype(np.uint8)
    mask = (prepared.masks[k][..., 0] > 0.5).astype(np.uint8) * 255
    for suffix, arr in (("completed", face), ("mask", mask)):
      path = os.path.join(folder, f"{k}_{stem}_{suffix}.png")
      _png(path, arr)
      out.append(path)
  return out
