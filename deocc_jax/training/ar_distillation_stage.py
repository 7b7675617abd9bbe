"""Stage 'distill_ar': a trained student distilled further on AR (paper Sec. 4.1).

AR's occluded photos have no unoccluded original. As the paper does, the
teacher sees "an unmasked face of the same subject, taken at random" instead
(:mod:`deocc_jax.data.ar_distillation`); the student sees the occluded photo
completed by the frozen G, with the occlusion segmenter's predicted mask (AR
has no true masks). The losses are the student's own (instance -- hard, or
soft around the AR subjects' teacher centres, Eq. 17-18 --, pair-wise
distance, triplet-wise angle) without L_CE: AR's subjects are not the
student's training classes. It starts from ``distill_ar.init``'s artefact and
trains on ``distill_ar.train_images`` of every subject (default AR session 1),
so AR's rank-1 probes (the other session) stay unseen.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.data import ar_distillation as ar_lib
from deocc_jax.data import pipeline as pipe
from deocc_jax.data import real_datasets as rd
from deocc_jax.data.pipeline import to_unit_range
from deocc_jax.errors import ConfigError
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import factories, trained_models
from deocc_jax.teachers import extract
from deocc_jax.training import distillation_stage
from deocc_jax.training.stage_spec import Plan, StageSpec, resolved

STAGE = "distill_ar"
SEED_OFFSET = 12
STARTS = ("distill_soft", "distill_hard")
KEYS = ("masked", "mask", "clean", "identity")


def _faces(src: rd.ARFace) -> np.ndarray:
  return np.stack([src[i]["image"] for i in range(len(src))])


def _in_batches(fn, images: np.ndarray, size: int = 32) -> np.ndarray:
  """``fn`` over [-1, 1] float batches of uint8 ``images`` (the last padded)."""
  out = []
  for i in range(0, len(images), size):
    x = to_unit_range(images[i : i + size])
    n = len(x)
    if n < size:
      x = np.concatenate([x, np.zeros((size - n,) + x.shape[1:], x.dtype)])
    out.append(np.asarray(fn(x))[:n])
  return np.concatenate(out)


def _host(tree: Any) -> Any:
  """A pytree's values as host arrays (one replica of a replicated array)."""
  return jax.tree.map(
      lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x),
      tree,
  )


def ar_pairs(
    config: ConfigDict, mean_landmarks: np.ndarray, segment
) -> tuple[ar_lib.ARPairs, dict]:
  """The pass's training faces (aligned as the evaluation aligns AR), their
  predicted masks, each subject's unoccluded faces, and facts for the artefact."""
  a, e = require(config, "distill_ar"), require(config, "evaluate")
  root = str(e.ar_root)
  if not root:
    raise ConfigError(
        "stage 'distill_ar' distils on AR: set config.evaluate.ar_root to the AR folder"
    )
  train_images, teacher_images = tuple(a.train_images), tuple(a.teacher_images)
  ar_lib.check_split(train_images, teacher_images)
  align = bool(e.align_real_faces)
  kw = dict(
      resolution=int(config.data.resolution),
      landmarks_file=str(e.ar_landmarks) or None,
      align_to=mean_landmarks if align else None,
      detector=rd.make_detector(str(e.landmark_detector)) if align else None,
  )
  occ_src = rd.ARFace(root, train_images, **kw)
  clean_src = rd.ARFace(root, teacher_images, **kw)
  if not len(occ_src) or not len(clean_src):
    raise ValueError(
        f"{root}: no AR images with indices {train_images} (occluded) or {teacher_images} "
        f"(unoccluded) for stage 'distill_ar'"
    )
  occluded, clean = _faces(occ_src), _faces(clean_src)
  masks = _in_batches(segment, occluded)
  clean_labels = np.asarray(clean_src.labels)
  by_person = {int(p): clean[clean_labels == p] for p in np.unique(clean_labels)}
  pairs = ar_lib.ARPairs(occluded, masks, np.asarray(occ_src.labels), by_person)
  facts = {
      "train_images": list(train_images),
      "teacher_images": list(teacher_images),
      "people": list(occ_src.people),
      "train_faces": len(occ_src),
      "teacher_faces": len(clean_src),
      "undetected": len(occ_src.undetected) + len(clean_src.undetected),
  }
  return pairs, facts


def section(config: ConfigDict, start: art.Artefact) -> ConfigDict:
  """The step's config: the starting student's own section (architecture,
  instance loss, lambdas) with ``distill_ar``'s schedule and no L_CE."""
  c = ConfigDict(start.facts["config"])
  a = require(config, "distill_ar")
  with c.unlocked():
    for k in a.keys():
      if k not in ("init", "train_images", "teacher_images"):
        c[k] = a[k]
    c.use_ce = False
    c.sample_every = 0
  return c


def plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
  """Stage 'distill_ar': ``distill_ar.init``'s student, distilled on AR (its
  batches: the AR pairs in memory; ``source`` is unused)."""
  a = require(config, "distill_ar")
  init = str(a.init)
  if init not in STARTS:
    raise ConfigError(f"config.distill_ar.init must be one of {STARTS}, got {init!r}")
  if not art.has(workdir, init):
    raise ConfigError(
        f"stage 'distill_ar' starts from stage {init!r}'s student (config.distill_ar.init), "
        f"which has not run in {workdir}"
    )
  start = art.read(workdir, init)
  teacher = factories.load_teacher(config, workdir)
  segment = trained_models.restore_segmenter(config, workdir)[0]
  facts = factories.data_facts(config, workdir)  # read once: alignment and the artefact
  pairs, ar_facts = ar_pairs(config, facts["mean_landmarks"], segment)
  c = resolved(config, section(config, start), pairs)
  frozen = {"teacher": teacher.params, "generator": factories.generator_params(config, workdir)}
  if str(c.instance) == "soft":  # Eq. 18 over the AR subjects' unoccluded faces
    params = _host(teacher.params)  # an argument of the program, not a constant in it
    embed = jax.jit(lambda p, x: teacher.apply(p, x)["embedding"])
    faces = np.concatenate([pairs.clean[p] for p in sorted(pairs.clean)])
    labels = np.concatenate([np.full(len(pairs.clean[p]), p) for p in sorted(pairs.clean)])
    frozen["centroids"] = extract.identity_centroids_np(
        _in_batches(lambda x: embed(params, x), faces), labels, pairs.num_classes
    )[0]
  init_fn, step_fn = distillation_stage.make_fns(
      c,
      config.deocclusion,
      teacher.apply,
      teacher.embed_dim,
      pairs.num_classes,
      int(config.data.resolution),
      mesh,
      teacher_num_classes=teacher.num_classes,
      teacher_name=f"teacher '{teacher.name}'",
  )
  start_vars = start.variables

  def init_from_student(key: jax.Array):
    fresh = init_fn(key)
    return {
        **fresh,
        "params": _subtree(start_vars["params"], fresh["params"], "params"),
        "batch_stats": _subtree(start_vars["batch_stats"], fresh["batch_stats"], "batch_stats"),
    }

  pcfg = pipe.PipelineConfig(  # in-memory faces: no workers, no reader threads
      batch_size=int(c.batch_size),
      seed=int(config.seed) * 1000 + SEED_OFFSET,
  )
  batches = iter(pipe.make_loader(pairs, pcfg, transform=ar_lib.UnmaskedPartner(pairs.clean)))
  spec = trained_models.student_spec(c, config, teacher, pairs.num_classes, facts)
  spec = dataclasses.replace(spec, facts={**spec.facts, "init": init, "ar": ar_facts})
  return Plan(c, init_from_student, step_fn, spec, frozen=frozen, batches=batches)


def _subtree(start: Any, like: Any, name: str) -> Any:
  """``start``'s values for exactly the entries of ``like`` (the student without
  its L_CE head), shapes checked; a clear error naming the first mismatch."""
  from flax import traverse_util

  have = traverse_util.flatten_dict(start)
  want = traverse_util.flatten_dict(like)
  out = {}
  for k, v in want.items():
    if k not in have:
      raise ValueError(f"the starting student's {name} have no {'/'.join(k)}")
    if tuple(np.shape(have[k])) != tuple(np.shape(v)):
      raise ValueError(
          f"the starting student's {name} {'/'.join(k)} is {np.shape(have[k])}, "
          f"the AR student's {np.shape(v)}"
      )
    out[k] = jax.numpy.asarray(have[k], v.dtype)
  return traverse_util.unflatten_dict(out)


DISTILL_AR = StageSpec(STAGE, SEED_OFFSET, KEYS, plan, source=None)
