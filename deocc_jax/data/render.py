"""Renders the synthetic masked-face data set: contact sheets + statistics."""

from __future__ import annotations

import io
import json
import os
import time
from typing import Any

import numpy as np
from etils import epath
from ml_collections import ConfigDict
from PIL import Image

from deocc_jax.configs import require
from deocc_jax.data import masks as masks_lib
from deocc_jax.data.mask_library import MaskLibrary
from deocc_jax.data.pipeline import SyntheticSplitSource, make_masked_pair
from deocc_jax.errors import ConfigError
from deocc_jax.utils.files import write_atomic


def contact_sheet(tiles: list[np.ndarray], columns: int) -> np.ndarray:
  """Grid of equally sized uint8 tiles with a 2 px gutter."""
  h, w = tiles[0].shape[:2]
  rows = -(-len(tiles) // columns)
  sheet = np.full((rows * (h + 2) + 2, columns * (w + 2) + 2, 3), 255, np.uint8)
  for k, t in enumerate(tiles):
    r, c = divmod(k, columns)
    sheet[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + c * (w + 2) : 2 + c * (w + 2) + w] = t
  return sheet


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def render_dataset(
    workdir: str,
    identities: int = 1000,
    images_per_identity: int = 20,
    resolution: int = 64,
    seed: int = 0,
    per_category: int = 48,
    columns: int = 8,
    stats_examples: int = 400,
    coverage_range: tuple[float, float] = masks_lib.DEFAULT_COVERAGE_RANGE,
    categories: tuple[str, ...] = masks_lib.CATEGORIES,
    mask_library: str = "",
    log=print,
    library_prob: float | None = None,
    face_mask_prob: float = masks_lib.MaskConfig.face_mask_prob,
    photometric: bool = True,
) -> dict[str, Any]:
  """Writes ``contact_<category>.png`` (masked | clean pairs) and ``stats.json``.

  With ``mask_library`` (a folder of RGBA PNGs, see ``mask_library.MaskLibrary``) a
  fraction ``library_prob`` (default 1.0) of the occluders of each category
  come from the user's images. Statistics also split face masks (fitted to
  the landmarks, not to the coverage target) from the other occluders.
  ``workdir`` is a local path or any ``etils.epath`` URI (``gs://...``);
  every file is written atomically (:func:`deocc_jax.utils.files.write_atomic`).
  """
  out = epath.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  source = SyntheticSplitSource.create("train", identities, images_per_identity, resolution, seed)
  library = MaskLibrary(mask_library) if mask_library else None
  cfg = masks_lib.MaskConfig(
      categories=tuple(categories),
      coverage_range=tuple(coverage_range),
      library=library,
      library_prob=library_prob,
      face_mask_prob=face_mask_prob,
      photometric=photometric,
  )
  rng = np.random.default_rng(seed)
  stats: dict[str, Any] = {
      "identities": identities,
      "images_per_identity": images_per_identity,
      "resolution": resolution,
      "seed": seed,
      "train_records": len(source),
      "coverage_range": list(coverage_range),
      "face_mask_prob": face_mask_prob,
      "categories": {},
  }
  t0 = time.perf_counter()
  n_done = 0
  for cat in cfg.categories:
    tiles, covs, is_fm = [], [], []
    for k in range(max(per_category, stats_examples // len(cfg.categories))):
      rec = source[(k * 7919 + masks_lib.CATEGORIES.index(cat) * 104729) % len(source)]
      info: dict[str, Any] = {}
      ex = make_masked_pair(rec, rng, cfg, flip=True, category=cat, details=info)
      covs.append(float(ex["coverage"]))
      is_fm.append("facemask:" in info["kind"])
      n_done += 1
      if k < per_category:
        tiles.append(np.concatenate([_to_uint8(ex["masked"]), _to_uint8(ex["clean"])], 1))
    path = out / f"contact_{cat}.png"
    buf = io.BytesIO()
    Image.fromarray(contact_sheet(tiles, columns)).save(buf, format="PNG")
    write_atomic(path, buf.getvalue())
    covs = np.array(covs)
    is_fm = np.array(is_fm, bool)
    stats["categories"][cat] = {
        "face_mask_fraction": float(is_fm.mean()),
        "face_mask_coverage_mean": float(covs[is_fm].mean()) if is_fm.any() else None,
        "other_coverage_mean": float(covs[~is_fm].mean()) if (~is_fm).any() else None,
        "examples": int(len(covs)),
        "coverage_mean": float(covs.mean()),
        "coverage_std": float(covs.std()),
        "coverage_min": float(covs.min()),
        "coverage_max": float(covs.max()),
        "in_range_fraction": float(
            np.mean((covs >= coverage_range[0] - 0.02) & (covs <= coverage_range[1] + 0.02))
        ),
        "contact_sheet": os.fspath(path),
    }
  stats["seconds_per_example"] = (time.perf_counter() - t0) / n_done
  write_atomic(out / "stats.json", json.dumps(stats, indent=2))
  log(format_stats(stats))
  return stats


def format_stats(stats: dict[str, Any]) -> str:
  lines = [
      f"synthetic masked faces: {stats['identities']} identities x "
      f"{stats['images_per_identity']} images at {stats['resolution']} px "
      f"({stats['train_records']} training records), coverage range "
      f"{stats['coverage_range']}",
      "| category | examples | coverage mean | std | min | max | in range |",
      "|---|---|---|---|---|---|---|",
  ]
  for cat, s in stats["categories"].items():
    lines.append(
        f"| {cat} | {s['examples']} | {s['coverage_mean']:.3f} | "
        f"{s['coverage_std']:.3f} | {s['coverage_min']:.3f} | "
        f"{s['coverage_max']:.3f} | {s['in_range_fraction']:.2f} |"
    )
  lines.append(f"{1e3 * stats['seconds_per_example']:.2f} ms per example (one core)")
  return "\n".join(lines)


def run_stage(config: ConfigDict, workdir: str) -> None:
  """Stage 'render_data': the synthetic set's contact sheets and statistics
  under ``<workdir>/data``."""
  if require(config, "data.source") != "synthetic":
    raise ConfigError(
        "stage 'render_data' renders the synthetic set; "
        f"config.data.source is {config.data.source!r}"
    )
  render_dataset(
      os.path.join(workdir, "data"),
      identities=int(require(config, "data.identities")),
      images_per_identity=int(require(config, "data.images_per_identity")),
      resolution=int(require(config, "data.resolution")),
      seed=int(require(config, "data.seed")),
      per_category=int(require(config, "render.per_category")),
      columns=int(require(config, "render.columns")),
      stats_examples=int(require(config, "render.stats_examples")),
      coverage_range=tuple(require(config, "data.coverage_range")),
      categories=tuple(require(config, "data.categories")),
      mask_library=str(require(config, "data.mask_library")),
      library_prob=config.data.library_prob,
      face_mask_prob=float(config.data.face_mask_prob),
      photometric=bool(config.data.photometric),
  )
