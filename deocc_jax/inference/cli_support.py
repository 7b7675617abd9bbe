"""Helpers of the ``infer`` CLI (``deocc_jax/infer.py``): the persistent JAX
compilation cache, converted recognisers' crop sizes, folder checks and
``embed --all_faces``."""

from __future__ import annotations

import os
from typing import Any

from deocc_jax.data.dataset_formats import IMAGE_EXTENSIONS
from deocc_jax.inference.gallery import Gallery
from deocc_jax.inference.images import ImageErrors, label_of, list_images

__all__ = [
    "CACHE_ENV",
    "compilation_cache_dir",
    "enable_compilation_cache",
    "converted_size",
    "folder_errors",
    "embed_all_faces",
]


CACHE_ENV = "DEOCC_JAX_CACHE_DIR"


def compilation_cache_dir() -> str | None:
  """The persistent JAX compilation cache of the CLIs: ``$DEOCC_JAX_CACHE_DIR``
  (``off`` disables it), default ``~/.cache/deocc_jax/jax_cache``."""
  path = os.environ.get(CACHE_ENV, "~/.cache/deocc_jax/jax_cache")
  if path.strip().lower() in ("", "0", "off", "none", "false"):
    return None
  return os.path.expanduser(path)


def enable_compilation_cache() -> str | None:
  """Points JAX's persistent compilation cache at :func:`compilation_cache_dir`
  (every compilation is kept: a warm CLI call compiles nothing)."""
  path = compilation_cache_dir()
  if path:
    import jax

    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def converted_size(path: str) -> int:
  """The alignment crop size of a converted recogniser (its template's)."""
  import json as json_lib

  from deocc_jax.data import alignment
  from deocc_jax.inference.pretrained import TEMPLATE_OF

  meta_path = os.path.join(path, "metadata.json")
  if not os.path.exists(meta_path):
    raise FileNotFoundError(f"{meta_path} not found: not a converted recogniser folder")
  with open(meta_path) as f:
    arch = str(json_lib.load(f).get("architecture"))
  return int(alignment.get_template(TEMPLATE_OF.get(arch, "arcface")).size[0])


def folder_errors(folder: str, located: dict[str, Any], skip_errors: bool) -> None:
  """Raises ``ImageErrors`` listing the unusable images of ``folder`` (unless --skip_errors)."""

  rel = list_images(folder)
  if not rel:
    raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
  errors = [
      (p, str(located[os.path.join(folder, p)]))
      for p in rel
      if isinstance(located[os.path.join(folder, p)], Exception)
  ]
  if errors and (not skip_errors or len(errors) == len(rel)):
    listed = "; ".join(msg for _, msg in errors[:20])
    more = f"; ... ({len(errors) - 20} more)" if len(errors) > 20 else ""
    raise ImageErrors(
        f"{len(errors)} of {len(rel)} images under {folder} cannot be used "
        f"(nothing written; skip them with --skip_errors): {listed}{more}",
        errors,
    )


def embed_all_faces(fr: Any, folder: str, out_path: str, located: dict[str, Any]) -> Any:
  """``embed --all_faces``: a gallery of every detected face (``PATH#K``)."""

  faces, kept, labels, skipped = [], [], [], []
  for rel in list_images(folder):
    entry = located[os.path.join(folder, rel)]
    if isinstance(entry, Exception):
      skipped.append((rel, str(entry)))
      continue
    for k, f in enumerate(entry.faces):
      try:
        faces.append(fr.load(entry.image, landmarks=f.landmarks, name=f"{rel}#{k}"))
      except ValueError as e:  # e.g. a small face in the background
        skipped.append((f"{rel}#{k}", str(e)))
        continue
      kept.append(f"{rel}#{k}")
      labels.append(label_of(rel))
  if not faces:
    raise ValueError(f"no usable face under {folder}")
  emb = fr.embed_prepared(fr.prepare(faces).completed)
  g = Gallery(
      emb,
      tuple(kept),
      tuple(labels),
      tuple(skipped),
      fr.name,
      fr.input_kind,
      out_path,
      fr.checkpoint_steps(),
  )
  g.save(out_path)
  return g
