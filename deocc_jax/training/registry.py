"""The stages of a run, in one table: name -> runner, seed offset, what it trains.

``deocc_jax.main`` runs a config's stages from this table; training derives
each stage's random key (model init, data order, occluders) from its seed
offset; evaluation and inference restore what a stage trained through its
``restore`` entry. Adding a stage is one row here plus its runner.

Runners and restorers are ``"module:function"`` references, imported when
used: the table sits in training (which reads the seed offsets) yet names the
evaluation stages above it without importing them.

Runner: ``fn(config, workdir, **kwargs)``. Restorer (stages that train a model
used later): ``fn(config, workdir, which, stage, deps) -> (restored, step)``
with ``deps`` the models already restored (``teacher``); restorers read the
stage's trained artefact (``training/trained_models.py``), not its checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import jax
from ml_collections import ConfigDict

ROLES = ("", "teacher", "generator", "segmenter", "recognizer")


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  runner: str  # "module:function"
  seed_offset: int = 0  # key = seed * 1000 + offset (0: no randomness of its own)
  role: str = ""  # what its checkpoints hold, for evaluation / inference
  restore: str = ""  # "module:function" restoring it ('' = nothing to restore)
  # (the tables list recognisers in this table's order)
  recognizer: str = ""  # role 'recognizer' / 'teacher': the tables' key ...
  display: str = ""  # ... and display name
  kwargs: tuple[tuple[str, Any], ...] = ()  # extra runner arguments

  def __post_init__(self) -> None:
    if self.role not in ROLES:
      raise ValueError(f"stage {self.name!r}: role {self.role!r} is not one of {ROLES}")

  def run(self, config: ConfigDict, workdir: str) -> None:
    resolve(self.runner)(config, workdir, **dict(self.kwargs))

  def restorer(self) -> Callable[..., tuple[Any, int | None]]:
    if not self.restore:
      raise ValueError(f"stage {self.name!r} trains nothing that can be restored")
    return resolve(self.restore)


def resolve(ref: str) -> Callable[..., Any]:
  """The function a ``"module:function"`` reference names."""
  module, _, name = ref.partition(":")
  return getattr(importlib.import_module(module), name)


_S = "deocc_jax.training.stages"
_T = "deocc_jax.training.trained_models"
_B = "deocc_jax.training.baseline_stages"
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("render_data", "deocc_jax.data.render:run_stage"),
        Stage("rehearsal_data", "deocc_jax.data.rehearsal:run"),
        Stage(
            "teacher",
            f"{_S}:run_teacher",
            1,
            "teacher",
            f"{_T}:restore_teacher",
            "teacher",
            "teacher",
        ),
        Stage("teacher_embeddings", f"{_S}:run_teacher_embeddings", 7),
        Stage(
            "deocclusion",
            f"{_S}:run_deocclusion",
            2,
            "generator",
            f"{_T}:restore_generator",
            kwargs=(("stage", "deocclusion"),),
        ),
        # Table 2's "GA w/o attention": the same batches as 'deocclusion' (paired).
        Stage(
            "deocclusion_noca",
            f"{_S}:run_deocclusion",
            2,
            "generator",
            f"{_T}:restore_generator",
            kwargs=(("stage", "deocclusion_noca"),),
        ),
        Stage("segmentation", f"{_S}:run_segmentation", 8, "segmenter", f"{_T}:restore_segmenter"),
        # The paper's baseline (Table 2): a student-sized ArcFace pretrained on
        # clean faces, then fine-tuned on completed faces; and the teacher
        # fine-tuned the same way, an extra row.
        Stage(
            "pretrain_arcface",
            f"{_B}:run_pretrain_arcface",
            10,
            "recognizer",
            f"{_T}:restore_recognizer",
            "arcface_pretrained",
            "student-sized ArcFace (clean faces only)",
        ),
        Stage(
            "finetune_arcface",
            f"{_B}:run_finetune",
            11,
            "recognizer",
            f"{_T}:restore_recognizer",
            "arcface_finetuned",
            "student-sized ArcFace fine-tuned",
            (("stage", "finetune_arcface"),),
        ),
        Stage(
            "finetune_teacher",
            f"{_B}:run_finetune",
            9,
            "recognizer",
            f"{_T}:restore_recognizer",
            "teacher_finetuned",
            "teacher fine-tuned",
            (("stage", "finetune_teacher"),),
        ),
        Stage(
            "distill_hard",
            f"{_S}:run_distill",
            3,
            "recognizer",
            f"{_T}:restore_recognizer",
            "student_hard",
            "student (hard)",
            (("stage", "distill_hard"),),
        ),
        Stage(
            "distill_soft",
            f"{_S}:run_distill",
            4,
            "recognizer",
            f"{_T}:restore_recognizer",
            "student_soft",
            "student (soft)",
            (("stage", "distill_soft"),),
        ),
        # Table 1's OUR row: a student distilled further on AR (paper Sec. 4.1).
        Stage(
            "distill_ar",
            "deocc_jax.training.ar_distillation_stage:run",
            12,
            "recognizer",
            f"{_T}:restore_recognizer",
            "student_ar",
            "student distilled on AR",
        ),
        Stage("joint", f"{_S}:run_joint", 5),
        Stage("evaluate", "deocc_jax.evaluation.job:run", 6),
        Stage("ablation", "deocc_jax.evaluation.ablation:run"),
        Stage("lambda_sweep", "deocc_jax.evaluation.lambda_sweep:run"),
        Stage("teacher_study", "deocc_jax.evaluation.teacher_study:run"),
    )
}


def get(name: str) -> Stage:
  if name not in STAGES:
    raise KeyError(f"unknown stage {name!r}; stages: {sorted(STAGES)}")
  return STAGES[name]


def stage_key(config: ConfigDict, stage: str) -> jax.Array:
  """The stage's root random key (model init; its data seeds derive alike)."""
  return jax.random.key(int(config.seed) * 1000 + get(stage).seed_offset)


def of_role(role: str) -> list[Stage]:
  return [s for s in STAGES.values() if s.role == role]


def recognizers() -> dict[str, Stage]:
  """Recogniser key (the tables' name) -> its stage, the teacher first."""
  return {s.recognizer: s for s in of_role("teacher") + of_role("recognizer")}
