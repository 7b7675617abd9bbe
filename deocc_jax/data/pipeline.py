"""Online masked-pair pipeline on grain.

An infinite, deterministic, per-host-sharded stream of batches::

    {'masked':    (B, H, W, 3) float32 in [-1, 1]  (occluded face X)
     'mask':      (B, H, W, 1) float32, 1 inside the occluded region (M)
     'clean':     (B, H, W, 3) float32 in [-1, 1]  (ground truth Y)
     'identity':  (B,) int32, split-local contiguous label
     'landmarks': (B, 5, 2) float32 pixel coordinates (x, y)
     'category':  (B,) int32 index into masks.CATEGORIES
     'coverage':  (B,) float32 fraction of the face region occluded}

Masks are drawn *online*: record ``r`` seen in epoch ``e`` gets a fresh
occluder each epoch (grain seeds a record's RNG from the sampler's global
index), so the stream never repeats a masked pair, yet the same seed gives
the same batches. Sharding across hosts uses grain's ``ShardByJaxProcess``;
the iterator state (``get_state``/``set_state``) goes into checkpoints.

With ``data.occluders='device'`` the host streams clean augmented faces
instead (``device_occluders_stream``: same sampler, same augmentation draws)
and the occluders are drawn on the accelerator beside the training step.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Protocol, Sequence

import grain.python as grain
import numpy as np

from deocc_jax.data import masks as masks_lib
from deocc_jax.data.dense_landmarks import FLIP_68
from deocc_jax.data.mask_library import MaskLibrary
from deocc_jax.data.synthetic_faces import SyntheticFaces

SPLITS = ("train", "validation", "test")


class FaceSource(Protocol):
  """A random-access source of aligned faces at a fixed resolution.

  ``source[i]`` returns ``{'image': (R, R, 3) uint8, 'landmarks': (5, 2)
  float32, 'identity': int}`` and optionally ``'face_region': (R, R)``.
  """

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> dict[str, Any]:
    ...


def identity_split(
    num_identities: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, np.ndarray]:
  """Disjoint train / validation / test identity sets (sorted id arrays)."""
  if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
    raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
  perm = np.random.default_rng([int(seed), 0x5B1]).permutation(num_identities)
  n_train = int(round(fractions[0] * num_identities))
  n_val = int(round(fractions[1] * num_identities))
  parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
  out = {name: np.sort(p) for name, p in zip(SPLITS, parts)}
  for name, ids in out.items():
    if fractions[SPLITS.index(name)] > 0 and len(ids) == 0:
      raise ValueError(
          f"split {name!r} is empty with {num_identities} identities " f"and fractions {fractions}"
      )
  return out


@dataclasses.dataclass(frozen=True)
class SyntheticSplitSource:
  """The synthetic faces of one identity split, labels made contiguous."""

  faces: SyntheticFaces
  identities: np.ndarray  # global identity ids of this split

  @classmethod
  def create(
      cls,
      split: str,
      identities: int = 1000,
      images_per_identity: int = 20,
      resolution: int = 64,
      seed: int = 0,
      fractions: Sequence[float] = (0.8, 0.1, 0.1),
  ) -> "SyntheticSplitSource":
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    faces = SyntheticFaces(identities, images_per_identity, resolution, seed)
    return cls(faces, identity_split(identities, fractions, seed)[split])

  @classmethod
  def pool(
      cls,
      first: int,
      count: int,
      images_per_identity: int = 20,
      resolution: int = 64,
      seed: int = 0,
  ) -> "SyntheticSplitSource":
    """Identities ``first .. first + count - 1`` of the same face space: a pool
    disjoint from the train / validation / test splits of ``first`` identities
    (the embedded default's teacher pool, a VGGFace2 analogue)."""
    if first < 0 or count < 1:
      raise ValueError(f"an identity pool needs first >= 0 and count >= 1, got {first}, {count}")
    faces = SyntheticFaces(first + count, images_per_identity, resolution, seed)
    return cls(faces, np.arange(first, first + count))

  @property
  def num_classes(self) -> int:
    return len(self.identities)

  def __repr__(self) -> str:
    # grain validates a restored iterator against repr(source): keep it stable.
    digest = hashlib.sha1(np.asarray(self.identities, np.int64).tobytes()).hexdigest()[:12]
    return (
        f"SyntheticSplitSource({self.faces!r}, identities={len(self.identities)}, "
        f"ids_sha1={digest})"
    )

  def __len__(self) -> int:
    return len(self.identities) * self.faces.images_per_identity

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range [0, {len(self)})")
    label, image = divmod(index, self.faces.images_per_identity)
    rec = self.faces.render(int(self.identities[label]), image)
    rec["global_identity"] = rec["identity"]
    rec["identity"] = np.int32(label)
    return rec


_FLIP_ORDER = np.array([1, 0, 2, 4, 3])  # swap left/right eyes and mouth corners


def flip_horizontal(image: np.ndarray, landmarks: np.ndarray, region: np.ndarray | None = None):
  """Mirrors a face and its landmarks (left/right labels swapped).

  ``landmarks`` may be the five CelebA points or dlib's 68 points.
  """
  w = image.shape[1]
  order = _FLIP_ORDER if len(landmarks) == 5 else FLIP_68
  lm = np.asarray(landmarks)[order].copy()
  lm[:, 0] = (w - 1) - lm[:, 0]
  return (image[:, ::-1], lm, None if region is None else region[:, ::-1])


def shift_image(
    image: np.ndarray, landmarks: np.ndarray, dx: int, dy: int, region: np.ndarray | None = None
):
  """Translates by whole pixels, replicating the border (``out[y, x] =
  image[clip(y - dy), clip(x - dx)]``, by slices: a 256 px face in ~0.05 ms)."""
  h, w = image.shape[:2]
  lm = landmarks + np.array([dx, dy], np.float32)
  out_region = None
  if region is not None:
    out_region = np.zeros_like(region)
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    ys0, xs0 = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out_region[ys, xs] = region[ys0, xs0]
  return _shift_edge(_shift_edge(image, dy, 0), dx, 1), lm, out_region


def _shift_edge(a: np.ndarray, d: int, axis: int) -> np.ndarray:
  """``a`` moved by ``d`` along ``axis`` (0 or 1), the vacated part filled with
  the nearest edge row / column."""
  n = a.shape[axis]
  if d == 0:
    return a
  d = max(-n, min(n, int(d)))
  out = np.empty_like(a)
  at = lambda lo, hi: (slice(lo, hi),) if axis == 0 else (slice(None), slice(lo, hi))  # noqa: E731
  if d > 0:
    out[at(d, n)] = a[at(0, n - d)]
    out[at(0, d)] = a[at(0, 1)]
  else:
    out[at(0, n + d)] = a[at(-d, n)]
    out[at(n + d, n)] = a[at(n - 1, n)]
  return out


def to_unit_range(x: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return x.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


class MaskedPairTransform(grain.RandomMapTransform):
  """Record -> masked training pair (flip / shift augmentation + occluder)."""

  def __init__(
      self,
      mask_config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
      flip: bool = True,
      max_shift_px: int = 0,
  ):
    self.mask_config = mask_config
    self.flip = flip
    self.max_shift_px = int(max_shift_px)

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    return make_masked_pair(element, rng, self.mask_config, self.flip, self.max_shift_px)


def augment(
    image: np.ndarray,
    lm: np.ndarray,
    region: np.ndarray | None,
    dense: np.ndarray | None,
    rng: np.random.Generator,
    flip: bool,
    max_shift_px: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
  """Random horizontal flip, then a shift of up to ``max_shift_px`` (the pair
  stream's augmentation; the same draws from ``rng`` for the host and device
  occluder paths): (image, 5 landmarks, face region, 68 landmarks or None)."""
  if flip and rng.random() < 0.5:
    image, lm, region = flip_horizontal(image, lm, region)
    if dense is not None:
      dense = flip_horizontal(image, dense)[1]
  if max_shift_px > 0:
    dx, dy = rng.integers(-max_shift_px, max_shift_px + 1, size=2)
    image, lm, region = shift_image(image, lm, int(dx), int(dy), region)
    if dense is not None:
      dense = dense + np.array([dx, dy], np.float32)
  return image, lm, region, dense


def make_masked_pair(
    element: dict[str, Any],
    rng: np.random.Generator,
    mask_config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
    flip: bool = True,
    max_shift_px: int = 0,
    category: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Builds one example of the pair stream from a face record.

  ``details``, when given, receives the occluder's ``kind`` (e.g.
  ``'facemask:surgical'``) for statistics.
  """
  image = np.asarray(element["image"])
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"record image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
  lm = np.asarray(element["landmarks"], np.float32)
  dense = element.get("landmarks68")  # optional (68, 2): face masks follow the jaw
  if dense is not None:
    dense = np.asarray(dense, np.float32)
    if dense.shape != (68, 2):
      raise ValueError(f"record landmarks68 must be (68, 2), got {dense.shape}")
  region = element.get("face_region")
  if region is None:
    region = masks_lib.face_region_from_landmarks(lm, *image.shape[:2])
  image, lm, region, dense = augment(image, lm, region, dense, rng, flip, max_shift_px)
  occ = masks_lib.synthesize_occlusion(
      rng, lm, region, mask_config, category, dense_landmarks=dense
  )
  masked = masks_lib.composite(image, occ)
  if details is not None:
    details["kind"] = occ.kind
  return {
      "masked": to_unit_range(masked),
      "mask": occ.mask[..., None],
      "clean": to_unit_range(np.ascontiguousarray(image)),
      "identity": np.int32(element["identity"]),
      "landmarks": lm.astype(np.float32),
      "category": np.int32(masks_lib.CATEGORIES.index(occ.category)),
      "coverage": np.float32(masks_lib.coverage(occ.mask, region)),
  }


def mask_config_from_data(data: Any) -> masks_lib.MaskConfig:
  """The :class:`~masks.MaskConfig` of a config's ``data`` section.

  Reads ``categories``, ``coverage_range``, ``mask_library`` (folder of RGBA
  PNGs), ``library_prob`` (rate at which library masks replace procedural
  occluders; default 1.0 when a library is given), ``face_mask_prob`` and
  ``photometric`` (defaults: ``deocc_jax/configs/base.py``).
  """
  lib = str(data.mask_library or "")
  lp = data.library_prob
  return masks_lib.MaskConfig(
      categories=tuple(data.categories),
      coverage_range=tuple(data.coverage_range),
      library=MaskLibrary(lib) if lib else None,
      library_prob=None if lp is None else float(lp),
      face_mask_prob=float(data.face_mask_prob),
      photometric=bool(data.photometric),
  )


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Knobs of the pair stream (see ``configs/`` for the ConfigDict form)."""

  batch_size: int = 64  # GLOBAL batch; each host loads batch_size / hosts
  seed: int = 0
  worker_count: int = 0  # grain worker processes (0 = in-process)
  worker_buffer_size: int = 2
  # grain reader threads per process (ReadOptions.num_threads): 0 reads in the
  # loop's thread -- for in-memory / rendered faces grain's default 16 threads
  # only poll and take the step's cores (teacher loop 1.11x slower with 16 on
  # 2 cores: benchmarks/results/read_threads.md); > 0 for slow storage.
  read_threads: int = 0
  shuffle: bool = True
  num_epochs: int | None = None  # None = infinite
  flip: bool = True
  max_shift_px: int = 0
  drop_remainder: bool = True


def make_loader(
    source: FaceSource,
    config: PipelineConfig,
    mask_config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
    shard_options: grain.ShardOptions | None = None,
    transform: grain.RandomMapTransform | None = None,
    batch_fn: Callable[[Sequence[Any]], Any] | None = None,
) -> grain.DataLoader:
  """A grain DataLoader of masked-pair batches for this host.

  Args:
    source: random-access face records.
    config: batch size (global), seed, workers, epochs, augmentation.
    mask_config: occluder categories / coverage.
    shard_options: defaults to ``ShardByJaxProcess`` (this host's shard).
    transform: replaces the record transform (default
      ``MaskedPairTransform(mask_config, ...)``; the device occluders' clean
      stream: ``device_occluders_stream.make_loader``).
    batch_fn: grain's batching function (default: stack every entry).
  """
  if shard_options is None:
    shard_options = grain.ShardByJaxProcess(drop_remainder=True)
  if config.batch_size % shard_options.shard_count:
    raise ValueError(
        f"global batch_size {config.batch_size} is not divisible by the "
        f"number of hosts {shard_options.shard_count}"
    )
  per_host = config.batch_size // shard_options.shard_count
  if len(source) < shard_options.shard_count:
    raise ValueError(
        f"source has {len(source)} records, fewer than " f"{shard_options.shard_count} shards"
    )
  sampler = grain.IndexSampler(
      num_records=len(source),
      shard_options=shard_options,
      shuffle=config.shuffle,
      num_epochs=config.num_epochs,
      seed=config.seed,
  )
  if transform is None:
    transform = MaskedPairTransform(mask_config, config.flip, config.max_shift_px)
  ops = [transform, grain.Batch(per_host, drop_remainder=config.drop_remainder, batch_fn=batch_fn)]
  return grain.DataLoader(
      data_source=source,
      sampler=sampler,
      operations=ops,
      worker_count=config.worker_count,
      worker_buffer_size=config.worker_buffer_size,
      read_options=read_options(config.read_threads),
  )


def read_options(threads: int) -> grain.ReadOptions:
  """grain's reader threads: ``threads`` (0 = none, the caller's thread reads)."""
  if threads < 0:
    raise ValueError(f"read_threads must be >= 0, got {threads}")
  return grain.ReadOptions(num_threads=int(threads), prefetch_buffer_size=64 * (threads > 0))


def synthetic_loader(
    split: str = "train",
    *,
    identities: int = 1000,
    images_per_identity: int = 20,
    resolution: int = 64,
    data_seed: int = 0,
    config: PipelineConfig = PipelineConfig(),
    mask_config: masks_lib.MaskConfig = masks_lib.MaskConfig(),
    shard_options: grain.ShardOptions | None = None,
) -> tuple[grain.DataLoader, SyntheticSplitSource]:
  """The embedded default: a loader over one split of the synthetic faces."""
  source = SyntheticSplitSource.create(
      split, identities, images_per_identity, resolution, data_seed
  )
  return make_loader(source, config, mask_config, shard_options), source
