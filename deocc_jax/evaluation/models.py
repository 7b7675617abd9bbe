"""Restoring every trained model of a run for evaluation and inference.

``restore_models(config, workdir, checkpoint)`` returns a :class:`Models`:
the recognisers (teacher, fine-tuned ArcFace baseline, hard / soft students
-- those whose stages have checkpoints), the frozen generator, the occlusion
segmenter and the mean training face, all restored onto the config's device
mesh whatever device count wrote them.

Checkpoint selection (``--checkpoint`` / ``config.evaluate.checkpoint``):
``latest``, ``best`` (the stage must keep checkpoints by a metric), a step
number, or per stage: ``"latest,distill_soft=best,deocclusion=400"`` (a bare
first item is the default for the other stages).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np
from ml_collections import ConfigDict

from deocc_jax.training import stages

# recogniser key -> (stage whose checkpoint holds it, display name)
RECOGNIZERS = {
    "teacher": ("teacher", "teacher"),
    "arcface_finetuned": ("finetune_arcface", "ArcFace fine-tuned"),
    "student_hard": ("distill_hard", "student (hard)"),
    "student_soft": ("distill_soft", "student (soft)"),
}
STAGES = ("teacher", "deocclusion", "deocclusion_noca", "segmentation", "finetune_arcface",
          "distill_hard", "distill_soft")

EmbedFn = Callable[[jax.Array], jax.Array]


def parse_checkpoint_spec(spec: str | int) -> dict[str, int | str]:
  """'latest' | 'best' | '400' | 'latest,distill_soft=best' -> {stage or '*': which}."""
  out: dict[str, int | str] = {"*": "latest"}

  def value(v: str) -> int | str:
    v = v.strip()
    if v in ("latest", "best"):
      return v
    if v.isdigit():
      return int(v)
    raise ValueError(f"checkpoint {v!r}: use 'latest', 'best' or a step number")

  for item in str(spec).split(","):
    item = item.strip()
    if not item:
      continue
    if "=" in item:
      stage, v = item.split("=", 1)
      if stage.strip() not in STAGES:
        raise ValueError(f"checkpoint spec names unknown stage {stage.strip()!r}; "
                         f"stages: {STAGES}")
      out[stage.strip()] = value(v)
    else:
      out["*"] = value(item)
  return out


def _has_checkpoints(workdir: str, stage: str) -> bool:
  from deocc_jax.training.workdir import as_path
  d = as_path(workdir) / stage / "checkpoints"
  return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


@dataclasses.dataclass
class Models:
  resolution: int
  recognizers: dict[str, EmbedFn]        # key (RECOGNIZERS) -> L2-normalised embeddings
  complete: Callable[[jax.Array, jax.Array], jax.Array] | None  # (masked, mask) -> completed
  segment: Callable[[jax.Array], jax.Array] | None              # masked -> binary mask
  mean_face: np.ndarray                  # (H, W, 3) mean training face in [-1, 1]
  mean_landmarks: np.ndarray             # (5, 2) mean training landmarks, pixels
  steps: dict[str, int]                  # stage -> restored step
  teacher: Any                           # the api.Teacher (frozen recogniser of clean faces)
  generator: Any                         # G's parameters, or None
  # G without contextual attention (stage 'deocclusion_noca', Table 2's "GA w/o
  # attention"): (masked, mask) -> completed, or None when that stage did not run
  complete_noca: Callable[[jax.Array, jax.Array], jax.Array] | None = None

  def display(self, key: str) -> str:
    name = RECOGNIZERS[key][1]
    if key == "arcface_finetuned" and self.teacher.name != "arcface":
      return f"{self.teacher.name} fine-tuned (ArcFace loss)"  # the converted teacher
    return f"teacher ({self.teacher.name})" if key == "teacher" else name


def mean_training_face(config: ConfigDict, max_records: int = 2000
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(mean face (H, W, 3) in [-1, 1], mean landmarks (5, 2)) of the training split:
  the mean-face fill's content and the crop layout inference aligns faces to."""
  from deocc_jax.data.pipeline import to_unit_range
  src = stages.make_source(config, "train")
  n = min(len(src), max_records)
  total = np.zeros(src[0]["image"].shape, np.float64)
  lms = np.zeros((5, 2), np.float64)
  for i in range(n):
    rec = src[i]
    total += to_unit_range(np.asarray(rec["image"]))
    lms += np.asarray(rec["landmarks"], np.float64)
  return (total / n).astype(np.float32), (lms / n).astype(np.float32)


def restore_models(config: ConfigDict, workdir: str, checkpoint: str | int = "latest",
                   recognizers: tuple[str, ...] | None = None) -> Models:
  """Restores what ``workdir`` holds; ``recognizers`` (default: all present)
  must all have checkpoints, else an error names the missing stage."""
  from deocc_jax.training import deocclusion_stage, distillation_stage, loop
  which = parse_checkpoint_spec(checkpoint)
  pick = lambda stage: which.get(stage, which["*"])  # noqa: E731
  from deocc_jax.training.workdir import as_path
  if not as_path(workdir).is_dir():
    raise FileNotFoundError(f"workdir {workdir!r} does not exist")
  res = int(stages.require(config, "data.resolution"))
  mesh = stages.make_mesh(config)
  wanted = tuple(RECOGNIZERS) if recognizers is None else tuple(recognizers)
  unknown = [r for r in wanted if r not in RECOGNIZERS]
  if unknown:
    raise ValueError(f"unknown recognizer(s) {unknown}; choose from {list(RECOGNIZERS)}")
  steps: dict[str, int] = {}
  rec: dict[str, EmbedFn] = {}

  teacher = stages.load_teacher(config, workdir, pick("teacher"))
  if "step" in teacher.metadata:  # trained here
    steps["teacher"] = int(teacher.metadata["step"])
  if "teacher" in wanted:
    rec["teacher"] = lambda x, t=teacher: t.apply(t.params, x)["embedding"]

  complete = g = None
  if _has_checkpoints(workdir, "deocclusion"):
    g, steps["deocclusion"] = stages.restore_generator(config, workdir, pick("deocclusion"),
                                                       with_step=True)
    complete = deocclusion_stage.complete_fn(config.deocclusion, g)
  complete_noca = None
  if _has_checkpoints(workdir, "deocclusion_noca"):
    g_noca, steps["deocclusion_noca"] = stages.restore_generator(
        config, workdir, pick("deocclusion_noca"), with_step=True, stage="deocclusion_noca")
    complete_noca = deocclusion_stage.complete_fn(
        stages.deocclusion_section(config, "deocclusion_noca"), g_noca)
  segment = None
  if _has_checkpoints(workdir, "segmentation") and "segmentation" in config:
    segment, steps["segmentation"] = stages.restore_segmenter(config, workdir,
                                                              pick("segmentation"))

  for key in wanted:
    stage = RECOGNIZERS[key][0]
    if key == "teacher":
      continue
    if not _has_checkpoints(workdir, stage):
      if recognizers is not None:
        raise FileNotFoundError(f"recognizer {key!r} needs stage {stage!r}, which has no "
                                f"checkpoints in {os.path.join(workdir, stage)}")
      continue
    if key == "arcface_finetuned":
      rec[key], steps[stage] = stages.restore_finetuned_arcface(config, workdir, pick(stage),
                                                                teacher, g)
    else:
      c, _, _, init_fn, _ = stages._distill_fns(config, workdir, stage, mesh,
                                                     teacher=teacher, generator=g)
      steps[stage], state = loop.restore_state(workdir, stage, init_fn,
                                               stages._key(config, stage), mesh, pick(stage),
                                               **loop.best_args(c))
      rec[key] = distillation_stage.embed_fn(c, teacher.embed_dim, state)
  mean_face, mean_lm = mean_training_face(config)
  return Models(res, rec, complete, segment, mean_face, mean_lm, steps, teacher, g,
                complete_noca=complete_noca)
