"""A trained run's factories from its config: the face sources of each split,
the teacher's training faces, the occluder config, the device mesh, the data
facts every artefact carries, and the run's teacher and generator.

Training, evaluation, inference and export all build these from a config the
same way; nothing here trains.
"""

from __future__ import annotations

import os
from typing import Any

from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.data import decoded_faces
from deocc_jax.data import masks as masks_lib
from deocc_jax.data import pipeline as pipe
from deocc_jax.data import real_datasets as rd
from deocc_jax.errors import ConfigError
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import kinds, trained_models
from deocc_jax.utils import sharding


def describe_source(config: ConfigDict, split: str) -> dict[str, Any]:
  """What a split's records are made from: the fields of ``config.data`` that
  change them (decoded faces are checked against it)."""
  d = require(config, "data")
  kind = str(require(config, "data.source"))
  out: dict[str, Any] = {
      "data_source": kind,
      "split": split,
      "resolution": int(require(config, "data.resolution")),
  }
  if kind == "synthetic":
    out.update(identities=int(d.identities), images_per_identity=int(d.images_per_identity))
    out.update(seed=int(d.seed))
  elif kind == "celeba":
    out.update(root=os.path.abspath(str(d.root)), partition=str(d.partition), seed=int(d.seed))
    out.update(holdout_identities=float(d.holdout_identities))
    out.update(tuning_identities=float(d.tuning_identities))
  elif kind == "folder":
    out.update(root=os.path.abspath(str(d.root)), landmarks_file=str(d.landmarks_file))
  return out


def make_source(config: ConfigDict, split: str, decoded: bool = True):
  """The face source of ``config.data`` for a split: with
  ``config.data.decoded_root`` (and ``decoded``), its decoded faces
  (``data/decoded_faces.py``), checked to be made from the same data."""
  d = require(config, "data")
  kind = require(config, "data.source")
  res = int(require(config, "data.resolution"))
  root = str(d.decoded_root)
  if decoded and root:
    return decoded_faces.DecodedFaces(
        os.path.join(root, split), expect=describe_source(config, split)
    )
  if kind == "synthetic":
    return pipe.SyntheticSplitSource.create(
        split, int(d.identities), int(d.images_per_identity), res, int(d.seed)
    )
  if kind == "celeba":
    root = str(require(config, "data.root"))
    return rd.CelebA(
        root,
        split,
        partition=str(d.partition),
        resolution=res,
        seed=int(d.seed),
        holdout_identities=float(d.holdout_identities),
        tuning_identities=float(d.tuning_identities),
    )
  if kind == "folder":
    return rd.ImageFolder(
        str(require(config, "data.root")),
        resolution=res,
        landmarks_file=str(d.landmarks_file) or None,
    )
  raise ConfigError(f"config.data.source must be 'synthetic', 'celeba' or 'folder', got {kind!r}")


def teacher_source(config: ConfigDict):
  """The faces the teacher trained here learns from: the synthetic teacher
  pool when ``config.data.teacher_identities`` > 0 (identities after the
  student pool's, so disjoint from every train / validation / test split: the
  VGGFace2 analogue of the paper's setting), else the training split."""
  d = require(config, "data")
  n = int(d.teacher_identities)
  if n <= 0:
    return make_source(config, "train")
  if str(d.source) != "synthetic":
    raise ConfigError(
        "config.data.teacher_identities (a disjoint teacher pool) exists for the "
        f"synthetic source only; config.data.source is {d.source!r}"
    )
  return pipe.SyntheticSplitSource.pool(
      int(d.identities),
      n,
      int(d.teacher_images_per_identity or d.images_per_identity),
      int(d.resolution),
      int(d.seed),
  )


def mask_config(config: ConfigDict) -> masks_lib.MaskConfig:
  return pipe.mask_config_from_data(require(config, "data"))


def make_mesh(config: ConfigDict):
  return sharding.make_mesh(int(config.mesh.num_devices) or None)


def data_facts(config: ConfigDict, workdir: str) -> dict[str, Any]:
  """Mean training face / landmarks, carried by every trained artefact."""
  return trained_models.data_facts(workdir, lambda: make_source(config, "train"))


def generator_params(config: ConfigDict, workdir: str) -> Any:
  """G's trained parameters (stage 'deocclusion''s artefact): a frozen input."""
  return trained_models.restore_generator(config, workdir)[0].variables["params"]


def generator_completion(
    config: ConfigDict, workdir: str, stage: str, field: str
) -> tuple[Any, Any, dict]:
  """The completion network a stage trains on: de-occlusion stage ``stage``
  (of ``runs/kinds.py``, e.g. 'deocclusion' or 'deocclusion_gfc'), named by
  ``config.<field>``: (its trained parameters, ``(params, masked, mask) ->
  completed``, which one it is: stage, step, architecture). A ConfigError
  names the field and the stage when that stage is unknown or not trained."""
  known = [t.stage for t in kinds.of_role("generator")]
  if stage not in known:
    raise ConfigError(f"config.{field}={stage!r} is not a de-occlusion stage; choose from {known}")
  if not art.has(workdir, stage):
    raise ConfigError(
        f"config.{field}={stage!r}: stage {stage!r} has no trained generator in "
        f"{art.directory(workdir, stage)}; train it first (list it in config.stages)"
    )
  a = trained_models.restore_generator(config, workdir, stage=stage)[0]
  ident = trained_models.generator_identity(stage, a)
  return a.variables["params"], trained_models.completion_from(a), ident


def load_teacher(config: ConfigDict, workdir: str, which: int | str = "latest"):
  """The config's teacher: the 'teacher' stage's artefact (the ArcFace teacher
  trained here, or the pretrained one it names), else ``config.teacher``'s
  pretrained weights."""
  facts = lambda: data_facts(config, workdir)  # noqa: E731
  return trained_models.restore_teacher(config, workdir, which, facts=facts)[0]
