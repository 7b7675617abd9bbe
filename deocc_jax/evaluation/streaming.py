"""Evaluation sets read batch by batch: faces and occluders made on demand.

:mod:`deocc_jax.evaluation.protocols` builds its sets as arrays of every face
(clean and each occluded copy), which at the paper's sizes does not fit in a
host's memory. The sets here hold only the record indices, labels and pairs;
the :class:`~deocc_jax.evaluation.evaluator.Evaluator` reads a batch of
records at a time (:meth:`SourceFaces.read`), makes its clean faces and
occluded copies exactly as :mod:`protocols` does (the occluder of record ``i``
from ``rng([seed, i, k_condition])``: the same pixels bit for bit), embeds
them and keeps only the embeddings and small per-face vectors.

The real sets are read the same way: LFW's pair images
(:func:`lfw_verification_set`) and the AR photos (:func:`ar_identification_set`,
whose probes are occluded already). Their landmarks are found once, up front,
keeping only the points. Array-backed views (``protocols.OccludedView``) go
through the same batch loop by :class:`ArrayFaces` / :class:`ArrayView`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from deocc_jax.data import masks as masks_lib
from deocc_jax.data import real_datasets as rd
from deocc_jax.data.pipeline import SyntheticSplitSource, to_unit_range
from deocc_jax.evaluation import protocols, verification


class SourceFaces:
  """Faces ``source[indices[j]]`` (j = 0..n-1) of a face source, read on demand."""

  def __init__(self, source: Any, indices: Sequence[int], labels: np.ndarray | None = None):
    self.source = source
    self.indices = np.asarray(indices, np.int64)
    self.labels = None if labels is None else np.asarray(labels)

  def __len__(self) -> int:
    return len(self.indices)

  def __repr__(self) -> str:
    return f"SourceFaces({self.source!r}, n={len(self)})"

  def read(self, rows: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The batch context of faces ``rows``: (source indices, records)."""
    idx = self.indices[rows]
    records = [self.source[int(i)] for i in idx]
    if self.labels is not None:
      got = np.array([int(r["identity"]) for r in records])
      if not np.array_equal(got, self.labels[rows]):
        raise ValueError(
            f"{self.source!r}: records {idx.tolist()} have identities {got.tolist()}, "
            f"not the labels {self.labels[rows].tolist()} the set was built with"
        )
    return idx, records

  def clean(self, ctx: tuple[np.ndarray, list[dict[str, Any]]]) -> np.ndarray:
    return np.stack([to_unit_range(np.asarray(r["image"])) for r in ctx[1]])


@dataclasses.dataclass(eq=False)
class SourceView:
  """One occluded copy of ``faces`` under ``condition`` (a category, 'mixture',
  'sunglasses' or 'scarf'); ``category`` / ``coverage`` (N,) are filled in by
  the evaluator's pass (None before)."""

  name: str
  faces: SourceFaces
  seed: int
  mask_config: masks_lib.MaskConfig
  category: np.ndarray | None = None
  coverage: np.ndarray | None = None
  has_mask: bool = True  # we occlude the faces (False: occluded already, AR photos)

  def batch(self, ctx: tuple[np.ndarray, list[dict[str, Any]]]) -> tuple[np.ndarray | None, ...]:
    """(masked, mask, category, coverage) of a batch context of ``faces``."""
    if not self.has_mask:
      return self.faces.clean(ctx), None, None, None
    idx, records = ctx
    v = protocols.occlude_records(records, self.name, self.seed, self.mask_config, indices=idx)
    return v.masked, v.mask, v.category, v.coverage


class ArrayFaces:
  """In-memory faces (N, H, W, C): the batch context is the row indices."""

  def __init__(self, images: np.ndarray):
    self.images = images

  def __len__(self) -> int:
    return len(self.images)

  def __repr__(self) -> str:
    return f"ArrayFaces({self.images.shape})"

  def read(self, rows: np.ndarray) -> np.ndarray:
    return rows

  def clean(self, rows: np.ndarray) -> np.ndarray:
    return self.images[rows]


class ArrayView:
  """An in-memory occluded view (``masked`` (N, H, W, 3), ``mask`` or None) in
  the batch loop; its category / coverage are the view's own."""

  def __init__(self, view: Any):
    self.view = view
    self.faces = ArrayFaces(view.masked)
    self.has_mask = getattr(view, "mask", None) is not None

  def batch(self, rows: np.ndarray) -> tuple[np.ndarray | None, ...]:
    mask = self.view.mask[rows] if self.has_mask else None
    return self.view.masked[rows], mask, None, None


def as_faces(x: Any) -> Any:
  return ArrayFaces(x) if isinstance(x, np.ndarray) else x


def as_view(v: Any) -> Any:
  return v if isinstance(v, SourceView) else ArrayView(v)


def has_mask(view: Any) -> bool:
  return bool(view.has_mask) if isinstance(view, SourceView) else view.mask is not None


# ------------------------------------------------------------------- sets


@dataclasses.dataclass(eq=False)
class StreamedVerificationSet:
  """A verification set whose faces are read on demand (see the module doc)."""

  name: str
  clean: SourceFaces
  labels: np.ndarray  # (N,)
  pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # a, b, same, fold
  views: dict[str, SourceView]
  identities: str = ""

  @property
  def num_pairs(self) -> int:
    return len(self.pairs[0])


@dataclasses.dataclass(eq=False)
class StreamedIdentificationSet:
  name: str
  gallery: SourceFaces
  gallery_labels: np.ndarray
  probe_labels: dict[str, np.ndarray]
  probes: dict[str, SourceView]
  undetected: int = 0
  identities: str = ""
  # AR: the recogniser distilled on this set's own subjects (its other rows
  # are zero-shot there), '' for none
  distilled_on_set: str = ""


def source_labels(source: Any, n: int) -> np.ndarray:
  """The identity labels of the first ``n`` records (int64), without decoding
  images where the source knows them (checked again as the records are read)."""
  if isinstance(source, SyntheticSplitSource):
    return np.arange(n, dtype=np.int64) // int(source.faces.images_per_identity)
  labels = getattr(source, "labels", None)
  if labels is not None and len(labels) >= n:
    return np.asarray(labels)[:n].astype(np.int64)
  return np.array([int(source[i]["identity"]) for i in range(n)], np.int64)


def _count(source: Any, max_records: int | None) -> int:
  return len(source) if not max_records else min(len(source), int(max_records))


def verification_set(
    source: Any,
    num_pairs: int = 6000,
    seed: int = 1234,
    mask_config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
    conditions: Sequence[str] = (protocols.MIXTURE,) + masks_lib.CATEGORIES,
    max_records: int | None = None,
    name: str = "synthetic",
) -> StreamedVerificationSet:
  """:func:`protocols.synthetic_verification_set`'s faces, pairs and occluders, read on demand."""
  n = _count(source, max_records)
  if not n:
    raise ValueError(f"{source!r}: no records to evaluate")
  labels = source_labels(source, n)
  faces = SourceFaces(source, np.arange(n), labels)
  pairs = verification.make_pairs(labels, num_pairs, seed=seed)
  views = {c: SourceView(c, faces, seed, mask_config) for c in conditions}
  return StreamedVerificationSet(name, faces, labels, pairs, views)


def identification_set(
    source: Any,
    seed: int = 1234,
    gallery_per_identity: int = 1,
    max_records: int | None = None,
    probes_per_identity: int | None = None,
    name: str = "synthetic",
) -> StreamedIdentificationSet:
  """:func:`protocols.synthetic_identification_set`, read on demand."""
  n = _count(source, max_records)
  labels = source_labels(source, n)
  gallery_idx, probe_idx = protocols.gallery_probe_split(
      labels, gallery_per_identity, probes_per_identity
  )
  gallery = SourceFaces(source, gallery_idx, labels[gallery_idx])
  probe_faces = SourceFaces(source, probe_idx, labels[probe_idx])
  probes, probe_labels = {}, {}
  for subset, kind in (("AR1 sunglasses", "sunglasses"), ("AR2 scarf", "scarf")):
    probes[subset] = SourceView(kind, probe_faces, seed, masks_lib.MaskConfig())
    probe_labels[subset] = labels[probe_idx]
  return StreamedIdentificationSet(name, gallery, labels[gallery_idx], probe_labels, probes)


def lfw_verification_set(
    lfw: rd.LFW,
    seed: int = 1234,
    mask_config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
    conditions: Sequence[str] = (protocols.MIXTURE,) + masks_lib.CATEGORIES,
) -> StreamedVerificationSet:
  """:func:`protocols.lfw_verification_set` (LFW view 2: the images of
  pairs.txt, its pairs and folds), read on demand."""
  used, pairs = protocols.lfw_pairs(lfw)
  lfw.locate(used)
  labels = np.asarray(lfw.labels)[used].astype(np.int64)
  faces = SourceFaces(lfw, used, labels)
  views = {c: SourceView(c, faces, seed, mask_config) for c in conditions}
  return StreamedVerificationSet("lfw", faces, labels, pairs, views)


def _photos(src: rd.ARFace) -> SourceFaces:
  src.locate()
  labels = np.asarray(src.labels).astype(np.int64)
  return SourceFaces(src, np.arange(len(src)), labels)


def ar_identification_set(
    root: str,
    resolution: int,
    landmarks_file: str | None = None,
    align_to: np.ndarray | None = None,
    detector: rd.Detector | None = None,
    exclude: Sequence[int] = (),
) -> StreamedIdentificationSet:
  """:func:`protocols.ar_identification_set` (gallery: the unoccluded photos;
  probes: the sunglasses and scarf photos as they are, none of ``exclude``),
  read on demand."""
  gallery_src, probe_srcs = protocols.ar_sources(
      root, resolution, landmarks_file, align_to, detector, exclude
  )
  gallery = _photos(gallery_src)
  undetected = len(gallery_src.undetected)
  probes, probe_labels = {}, {}
  for subset, src in probe_srcs.items():
    faces = _photos(src)
    probes[subset] = SourceView(subset, faces, 0, masks_lib.MaskConfig(), has_mask=False)
    probe_labels[subset] = faces.labels
    undetected += len(src.undetected)
  return StreamedIdentificationSet("ar", gallery, gallery.labels, probe_labels, probes, undetected)
