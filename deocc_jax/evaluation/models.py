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

from deocc_jax.data.pipeline import to_unit_range
from deocc_jax.training import deocclusion_stage, registry, stages
from deocc_jax.training.workdir import as_path

# recogniser key -> (stage whose checkpoint holds it, display name), from the registry
RECOGNIZERS = {k: (s.name, s.display) for k, s in registry.recognizers().items()}
# the stages whose checkpoints hold a model evaluation restores
STAGES = tuple(s.name for s in registry.STAGES.values() if s.restore)

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
        raise ValueError(
            f"checkpoint spec names unknown stage {stage.strip()!r}; " f"stages: {STAGES}"
        )
      out[stage.strip()] = value(v)
    else:
      out["*"] = value(item)
  return out


def _has_checkpoints(workdir: str, stage: str) -> bool:
  d = as_path(workdir) / stage / "checkpoints"
  return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


@dataclasses.dataclass
class Models:
  resolution: int
  recognizers: dict[str, EmbedFn]  # key (RECOGNIZERS) -> L2-normalised embeddings
  complete: Callable[[jax.Array, jax.Array], jax.Array] | None  # (masked, mask) -> completed
  segment: Callable[[jax.Array], jax.Array] | None  # masked -> binary mask
  mean_face: np.ndarray  # (H, W, 3) mean training face in [-1, 1]
  mean_landmarks: np.ndarray  # (5, 2) mean training landmarks, pixels
  steps: dict[str, int]  # stage -> restored step
  teacher: Any  # the api.Teacher (frozen recogniser of clean faces)
  generator: Any  # G's parameters, or None
  # G without contextual attention (stage 'deocclusion_noca', Table 2's "GA w/o
  # attention"): (masked, mask) -> completed, or None when that stage did not run
  complete_noca: Callable[[jax.Array, jax.Array], jax.Array] | None = None

  def display(self, key: str) -> str:
    name = RECOGNIZERS[key][1]
    if key == "arcface_finetuned" and self.teacher.name != "arcface":
      return f"{self.teacher.name} fine-tuned (ArcFace loss)"  # the converted teacher
    return f"teacher ({self.teacher.name})" if key == "teacher" else name


def mean_training_face(
    config: ConfigDict, max_records: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
  """(mean face (H, W, 3) in [-1, 1], mean landmarks (5, 2)) of the training split:
  the mean-face fill's content and the crop layout inference aligns faces to."""
  src = stages.make_source(config, "train")
  n = min(len(src), max_records)
  total = np.zeros(src[0]["image"].shape, np.float64)
  lms = np.zeros((5, 2), np.float64)
  for i in range(n):
    rec = src[i]
    total += to_unit_range(np.asarray(rec["image"]))
    lms += np.asarray(rec["landmarks"], np.float64)
  return (total / n).astype(np.float32), (lms / n).astype(np.float32)


def restore_models(
    config: ConfigDict,
    workdir: str,
    checkpoint: str | int = "latest",
    recognizers: tuple[str, ...] | None = None,
) -> Models:
  """Restores what ``workdir`` holds; ``recognizers`` (default: all present)
  must all have checkpoints, else an error names the missing stage. Each
  model comes through its stage's restorer in the registry."""
  which = parse_checkpoint_spec(checkpoint)
  pick = lambda stage: which.get(stage, which["*"])  # noqa: E731
  if not as_path(workdir).is_dir():
    raise FileNotFoundError(f"workdir {workdir!r} does not exist")
  res = int(stages.require(config, "data.resolution"))
  wanted = tuple(RECOGNIZERS) if recognizers is None else tuple(recognizers)
  unknown = [r for r in wanted if r not in RECOGNIZERS]
  if unknown:
    raise ValueError(f"unknown recognizer(s) {unknown}; choose from {list(RECOGNIZERS)}")
  steps: dict[str, int] = {}
  rec: dict[str, EmbedFn] = {}

  def restore(stage: str, deps: dict[str, Any] | None = None) -> Any:
    out, step = registry.get(stage).restorer()(config, workdir, pick(stage), stage, deps)
    if step is not None:
      steps[stage] = int(step)
    return out

  teacher = restore("teacher")
  if "teacher" in wanted:
    rec["teacher"] = lambda x, t=teacher: t.apply(t.params, x)["embedding"]

  generators = {
      s.name: restore(s.name)
      for s in registry.of_role("generator")
      if _has_checkpoints(workdir, s.name)
  }
  completions = {
      name: deocclusion_stage.complete_fn(stages.deocclusion_section(config, name), params)
      for name, params in generators.items()
  }
  g = generators.get("deocclusion")
  segment = None
  if _has_checkpoints(workdir, "segmentation") and "segmentation" in config:
    segment = restore("segmentation")

  for key in wanted:
    stage = RECOGNIZERS[key][0]
    if key == "teacher":
      continue
    if not _has_checkpoints(workdir, stage):
      if recognizers is not None:
        raise FileNotFoundError(
            f"recognizer {key!r} needs stage {stage!r}, which has no "
            f"checkpoints in {os.path.join(workdir, stage)}"
        )
      continue
    rec[key] = restore(stage, {"teacher": teacher, "generator": g})
  mean_face, mean_lm = mean_training_face(config)
  return Models(
      res,
      rec,
      completions.get("deocclusion"),
      segment,
      mean_face,
      mean_lm,
      steps,
      teacher,
      g,
      complete_noca=completions.get("deocclusion_noca"),
  )
