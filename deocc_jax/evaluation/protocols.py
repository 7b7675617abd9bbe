"""Evaluation sets: the LFW verification and AR identification protocols.

Both are fixed, seeded sets of images, so every recogniser and every input
(masked, completed by G, classical fills) is scored on the same faces.

Verification (LFW): a set of faces with identity labels, pairs in 10 folds,
and one occluded copy of every face per **occlusion condition** -- each mask
category alone and their mixture. The occluder of image ``i`` under condition
``c`` is drawn from ``rng([seed, i, k_c])``: the same image is masked the same
way wherever it appears. A pair is scored with its second face occluded
(``one``) or both faces occluded (``both``); the unoccluded face is clean.

* :func:`synthetic_verification_set`: every image of a split of the synthetic
  default (held-out identities), pairs drawn LFW-style
  (:func:`verification.make_pairs`: balanced, identity-disjoint folds).
* :func:`lfw_verification_set`: the real LFW with the official pairs.txt
  (6,000 pairs in 10 folds); faces aligned by their 5 landmarks onto the
  training crop's template (``rd.LFW(..., align_to=...)``), occluders placed
  by the same landmarks.

Identification (AR): a gallery of clean faces per identity and probe
subsets with sunglasses (AR1) and scarves (AR2).

* :func:`synthetic_identification_set`: the synthetic equivalent on held-out
  identities: the first ``gallery_per_identity`` images of an identity form
  its gallery, every other image is a probe, occluded once with synthetic
  sunglasses (AR1) and once with a scarf (AR2); true masks are known.
* :func:`ar_identification_set`: the real AR database: gallery = unoccluded
  images, probes = the sunglasses and scarf subsets. Real occlusions come
  without a mask; completions use the occlusion segmenter's prediction.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from deocc_jax.data import ar_distillation
from deocc_jax.data import masks as masks_lib
from deocc_jax.data import real_datasets as rd
from deocc_jax.data.pipeline import to_unit_range
from deocc_jax.evaluation import verification

MIXTURE = "mixture"
_CONDITION_KEYS = {
    MIXTURE: 0,
    **{c: i + 1 for i, c in enumerate(masks_lib.CATEGORIES)},
    "sunglasses": 11,
    "scarf": 12,
}


@dataclasses.dataclass
class OccludedView:
  """One occluded copy of a set of faces.

  ``mask`` is the true occlusion mask (N, H, W, 1), or None for real
  occlusions (AR photos) where it is unknown.
  """

  name: str
  masked: np.ndarray  # (N, H, W, 3) float32 in [-1, 1]
  mask: np.ndarray | None  # (N, H, W, 1) float32 {0, 1}
  category: np.ndarray | None  # (N,) indices into masks.CATEGORIES
  coverage: np.ndarray | None  # (N,) fraction of the face region covered


@dataclasses.dataclass
class VerificationSet:
  name: str
  clean: np.ndarray  # (N, H, W, 3) float32 in [-1, 1]
  labels: np.ndarray  # (N,)
  pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # a, b, same, fold
  views: dict[str, OccludedView]  # condition -> occluded copy of ``clean``
  identities: str = ""  # which identities these are (goes into table titles)

  @property
  def num_pairs(self) -> int:
    return len(self.pairs[0])


@dataclasses.dataclass
class IdentificationSet:
  name: str
  gallery: np.ndarray  # (G, H, W, 3) clean faces
  gallery_labels: np.ndarray  # (G,)
  probe_labels: dict[str, np.ndarray]  # subset -> (P,)
  probes: dict[str, OccludedView]  # subset ('AR1 sunglasses', ...) -> occluded probes
  undetected: int = 0  # faces the landmark detector missed (default layout)
  identities: str = ""  # which identities these are (goes into table titles)


def _occlude(
    record: dict[str, Any],
    rng: np.random.Generator,
    condition: str,
    mask_config: masks_lib.MaskConfig,
) -> tuple[np.ndarray, np.ndarray, int, float]:
  image = np.asarray(record["image"])
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"record image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
  lm = np.asarray(record["landmarks"], np.float32)
  h, w = image.shape[:2]
  region = record.get("face_region")
  if region is None:
    region = masks_lib.face_region_from_landmarks(lm, h, w)
  if condition in masks_lib.AR_OCCLUSIONS:
    occ = masks_lib.synthesize_ar_occlusion(rng, lm, h, w, condition)
  else:
    occ = masks_lib.synthesize_occlusion(
        rng, lm, region, mask_config, None if condition == MIXTURE else condition
    )
  return (
      to_unit_range(masks_lib.composite(image, occ)),
      occ.mask[..., None],
      masks_lib.CATEGORIES.index(occ.category),
      masks_lib.coverage(occ.mask, region),
  )


def occlude_records(
    records: Sequence[dict[str, Any]],
    condition: str,
    seed: int,
    mask_config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
    indices: Sequence[int] | None = None,
) -> OccludedView:
  """Occludes every record under ``condition`` (a category, 'mixture',
  'sunglasses' or 'scarf'), deterministically from ``seed`` and the record's
  index (``indices[j]``, default ``j``)."""
  if condition not in _CONDITION_KEYS:
    raise ValueError(
        f"unknown occlusion condition {condition!r}; choose from " f"{sorted(_CONDITION_KEYS)}"
    )
  key = _CONDITION_KEYS[condition]
  idx = range(len(records)) if indices is None else indices
  out = [
      _occlude(r, np.random.default_rng([seed, int(i), key]), condition, mask_config)
      for r, i in zip(records, idx)
  ]
  if not out:
    raise ValueError(f"no records to occlude for condition {condition!r}")
  masked, mask, cat, cov = zip(*out)
  return OccludedView(
      condition,
      np.stack(masked),
      np.stack(mask).astype(np.float32),
      np.array(cat, np.int32),
      np.array(cov, np.float32),
  )


def _records(source: Any, max_records: int | None) -> list[dict[str, Any]]:
  n = len(source) if not max_records else min(len(source), int(max_records))
  return [source[i] for i in range(n)]


def synthetic_verification_set(
    source: Any,
    num_pairs: int = 6000,
    seed: int = 1234,
    mask_config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
    conditions: Sequence[str] = (MIXTURE,) + masks_lib.CATEGORIES,
    max_records: int | None = None,
    name: str = "synthetic",
) -> VerificationSet:
  """Verification on every face of ``source`` (e.g. the held-out test split)."""
  records = _records(source, max_records)
  labels = np.array([int(r["identity"]) for r in records])
  clean = np.stack([to_unit_range(np.asarray(r["image"])) for r in records])
  pairs = verification.make_pairs(labels, num_pairs, seed=seed)
  views = {c: occlude_records(records, c, seed, mask_config) for c in conditions}
  return VerificationSet(name, clean, labels, pairs, views)


def lfw_pairs(lfw: rd.LFW) -> tuple[list[int], tuple[np.ndarray, ...]]:
  """(the LFW indices of the images pairs.txt uses, sorted; (a, b, same, fold)
  with a / b positions in that list)."""
  if not lfw.pairs:
    raise ValueError(f"{lfw!r} has no pairs: pass pairs_file= (pairs.txt)")
  used = sorted(
      {lfw.index_of(p.path_a) for p in lfw.pairs} | {lfw.index_of(p.path_b) for p in lfw.pairs}
  )
  pos = {i: k for k, i in enumerate(used)}
  a = np.array([pos[lfw.index_of(p.path_a)] for p in lfw.pairs])
  b = np.array([pos[lfw.index_of(p.path_b)] for p in lfw.pairs])
  same = np.array([bool(p.same) for p in lfw.pairs])
  fold = np.array([int(p.fold) for p in lfw.pairs])
  return used, (a, b, same, fold)


def lfw_verification_set(
    lfw: rd.LFW,
    seed: int = 1234,
    mask_config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
    conditions: Sequence[str] = (MIXTURE,) + masks_lib.CATEGORIES,
) -> VerificationSet:
  """LFW view 2: the images of pairs.txt (loaded once each), its pairs and folds."""
  used, pairs = lfw_pairs(lfw)
  records = [lfw[i] for i in used]
  clean = np.stack([to_unit_range(np.asarray(r["image"])) for r in records])
  labels = np.array([int(r["identity"]) for r in records])
  views = {c: occlude_records(records, c, seed, mask_config, indices=used) for c in conditions}
  return VerificationSet("lfw", clean, labels, pairs, views)


def gallery_probe_split(
    labels: np.ndarray, gallery_per_identity: int, probes_per_identity: int | None
) -> tuple[list[int], list[int]]:
  """(gallery, probe) indices: each identity's first ``gallery_per_identity``
  records form the gallery, the next ``probes_per_identity`` (default: all the
  rest) its probes."""
  seen: dict[int, int] = {}
  gallery_idx, probe_idx = [], []
  for i, y in enumerate(np.asarray(labels).tolist()):
    k = seen.get(y, 0)
    seen[y] = k + 1
    if k < gallery_per_identity:
      gallery_idx.append(i)
    elif probes_per_identity is None or k < gallery_per_identity + probes_per_identity:
      probe_idx.append(i)
  if not probe_idx:
    raise ValueError(
        f"{len(labels)} records with gallery_per_identity={gallery_per_identity} leave no probes"
    )
  return gallery_idx, probe_idx


def synthetic_identification_set(
    source: Any,
    seed: int = 1234,
    gallery_per_identity: int = 1,
    max_records: int | None = None,
    probes_per_identity: int | None = None,
    name: str = "synthetic",
) -> IdentificationSet:
  """AR-style identification on a labelled source (see the module docstring).

  ``probes_per_identity`` caps the probes of an identity per subset (AR has 6
  sunglasses and 6 scarf images per person); default: every other image.
  """
  records = _records(source, max_records)
  labels = np.array([int(r["identity"]) for r in records])
  gallery_idx, probe_idx = gallery_probe_split(labels, gallery_per_identity, probes_per_identity)
  gallery = np.stack([to_unit_range(np.asarray(records[i]["image"])) for i in gallery_idx])
  probe_records = [records[i] for i in probe_idx]
  probes, probe_labels = {}, {}
  for subset, kind in (("AR1 sunglasses", "sunglasses"), ("AR2 scarf", "scarf")):
    probes[subset] = occlude_records(probe_records, kind, seed, indices=probe_idx)
    probe_labels[subset] = labels[probe_idx]
  return IdentificationSet(name, gallery, labels[gallery_idx], probe_labels, probes)


def ar_identification_set(
    root: str,
    resolution: int,
    landmarks_file: str | None = None,
    align_to: np.ndarray | None = None,
    detector: rd.Detector | None = None,
) -> IdentificationSet:
  """The real AR database (file naming ``m-001-01.bmp``; see ``ARFace``).

  Labels are per person across subsets; every probe person needs at least
  one unoccluded gallery image. With ``align_to`` (the training crop's
  template) every face is aligned by its 5 landmarks (``landmarks_file``,
  else ``detector``), as CelebA's faces are (paper Sec. 4.1).
  """
  gallery_src, probe_srcs = ar_sources(root, resolution, landmarks_file, align_to, detector)
  gallery = np.stack([to_unit_range(gallery_src[i]["image"]) for i in range(len(gallery_src))])
  undetected = len(gallery_src.undetected)
  probes, probe_labels = {}, {}
  for subset, src in probe_srcs.items():
    images = np.stack([to_unit_range(src[i]["image"]) for i in range(len(src))])
    probes[subset] = OccludedView(subset, images, None, None, None)
    probe_labels[subset] = src.labels.astype(np.int64)
    undetected += len(src.undetected)
  return IdentificationSet(
      "ar", gallery, gallery_src.labels.astype(np.int64), probe_labels, probes, undetected
  )


def ar_sources(
    root: str,
    resolution: int,
    landmarks_file: str | None = None,
    align_to: np.ndarray | None = None,
    detector: rd.Detector | None = None,
    exclude: Sequence[int] = (),
) -> tuple[rd.ARFace, dict[str, rd.ARFace]]:
  """(the unoccluded AR photos, {'AR1 sunglasses' / 'AR2 scarf': their photos}),
  checked: each subset has images, each probe person a gallery image.
  ``exclude``: AR image indices no probe may be (those AR's distillation pass
  trained on)."""
  kw = dict(
      resolution=resolution, landmarks_file=landmarks_file, align_to=align_to, detector=detector
  )
  gallery = rd.ARFace(root, "clean", **kw)
  probes = {}
  for subset, name in (("AR1 sunglasses", "sunglasses"), ("AR2 scarf", "scarf")):
    indices = ar_distillation.probe_indices(name, exclude)
    src = rd.ARFace(root, indices, **kw)
    if not len(src):
      raise ValueError(f"{root}: no AR {name} images (indices {indices})")
    missing = sorted(set(src.labels.tolist()) - set(gallery.labels.tolist()))
    if missing:
      raise ValueError(
          f"{root}: {name} images of {[src.people[m] for m in missing[:5]]} "
          "have no unoccluded gallery image"
      )
    probes[subset] = src
  return gallery, probes
