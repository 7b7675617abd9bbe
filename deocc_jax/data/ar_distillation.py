"""AR's distillation pass (paper Sec. 4.1): its images, split per subject, and its pairs.

AR has no unoccluded original of an occluded photo. The paper "randomly took
an unmasked face of the same subject, instead of its non-exist original, to
send into the teacher". The pass trains on a fixed set of AR image indices of
every subject (by default session 1: sunglasses 8-10, scarf 11-13, the clean
faces 1-7 for the teacher); AR's rank-1 probes are then the occluded images of
the other indices (session 2: 21-26), which the pass never sees.

:class:`ARPairs` is the random-access source of the occluded training faces
(each with the mask the occlusion segmenter predicted for it);
:class:`UnmaskedPartner` draws, per example, one clean face of the same
subject from the example's own grain RNG -- the batch keys are the
distillation step's ('masked', 'mask', 'clean', 'identity').
"""

from __future__ import annotations

from typing import Any, Sequence

import grain.python as grain
import numpy as np

from deocc_jax.data import real_datasets as rd
from deocc_jax.data.pipeline import to_unit_range

OCCLUDED = tuple(sorted(rd.AR_SUBSETS["sunglasses"] + rd.AR_SUBSETS["scarf"]))


def probe_indices(subset: str, train_images: Sequence[int]) -> tuple[int, ...]:
  """AR image indices of ``subset`` ('sunglasses' / 'scarf') that rank-1 probes
  may use when the distillation pass trained on ``train_images``."""
  left = tuple(i for i in rd.AR_SUBSETS[subset] if i not in set(int(t) for t in train_images))
  if not left:
    raise ValueError(
        f"config.distill_ar.train_images={tuple(train_images)} trains on every AR "
        f"{subset} image: no {subset} probe is left; "
        f"train on one session's images (e.g. 8-13) and probe the other's"
    )
  return left


def check_split(train_images: Sequence[int], teacher_images: Sequence[int]) -> None:
  """The pass's training indices must be occluded AR images and its teacher
  indices clean ones (AR numbering 1-26); raises a ValueError naming the field."""
  bad = sorted(set(int(i) for i in train_images) - set(OCCLUDED))
  if bad or not train_images:
    raise ValueError(
        f"config.distill_ar.train_images must be occluded AR images {OCCLUDED}; "
        f"got {tuple(train_images)}"
    )
  clean = set(rd.AR_SUBSETS["clean"])
  bad = sorted(set(int(i) for i in teacher_images) - clean)
  if bad or not teacher_images:
    raise ValueError(
        f"config.distill_ar.teacher_images must be unoccluded AR images {tuple(sorted(clean))}; "
        f"got {tuple(teacher_images)}"
    )


class ARPairs:
  """Occluded training faces (uint8), their predicted masks and person labels;
  ``clean[label]`` holds that person's unoccluded faces (uint8)."""

  def __init__(
      self,
      occluded: np.ndarray,
      masks: np.ndarray,
      labels: np.ndarray,
      clean: dict[int, np.ndarray],
  ):
    occluded, masks, labels = np.asarray(occluded), np.asarray(masks), np.asarray(labels)
    if occluded.ndim != 4 or occluded.shape[-1] != 3 or occluded.dtype != np.uint8:
      raise ValueError(
          f"occluded faces must be (N, H, W, 3) uint8, got {occluded.shape} {occluded.dtype}"
      )
    if masks.shape != occluded.shape[:3] + (1,):
      raise ValueError(f"masks must be {occluded.shape[:3] + (1,)}, got {masks.shape}")
    if labels.shape != (len(occluded),):
      raise ValueError(f"labels must be ({len(occluded)},), got {labels.shape}")
    missing = sorted(set(labels.tolist()) - {k for k, v in clean.items() if len(v)})
    if missing:
      raise ValueError(f"AR people {missing} have occluded training faces but no unoccluded one")
    self.occluded, self.masks, self.labels = occluded, masks.astype(np.float32), labels
    self.clean = {int(k): np.asarray(v) for k, v in clean.items()}

  def __len__(self) -> int:
    return len(self.occluded)

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = int(i)
    return {"image": self.occluded[i], "mask": self.masks[i], "identity": np.int32(self.labels[i])}

  @property
  def num_classes(self) -> int:
    return len(self.clean)


class UnmaskedPartner(grain.RandomMapTransform):
  """An occluded face -> the distillation pair: the face itself as 'masked',
  its predicted 'mask', and one unoccluded face of the same person, drawn
  from the example's RNG, as 'clean' (the teacher's input)."""

  def __init__(self, clean: dict[int, np.ndarray]):
    self.clean = clean

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    person = int(element["identity"])
    pool = self.clean[person]
    partner = pool[int(rng.integers(len(pool)))]
    return {
        "masked": to_unit_range(element["image"]),
        "mask": np.asarray(element["mask"], np.float32),
        "clean": to_unit_range(partner),
        "identity": np.int32(person),
    }
