"""What each stage of a run trains, and how it is restored: one table.

A stage that trains a model later stages, evaluation, inference or export use
has one :class:`Trained` row here: its role, its restorer
(``runs/trained_models.py``: reads the stage's artefact, never its training
checkpoint) and, for recognisers, the tables' key and display name. The
tables list recognisers in this table's order. How a stage is *run* (its
runner and seed) is training's table, ``training/registry.py``.

Restorer: ``fn(config, workdir, which, stage, deps) -> (restored, step)``
with ``deps`` the models already restored (``teacher``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from deocc_jax.runs import trained_models as tm

ROLES = ("teacher", "generator", "segmenter", "recognizer")

Restorer = Callable[..., tuple[Any, "int | None"]]


@dataclasses.dataclass(frozen=True)
class Trained:
  stage: str
  role: str  # what its artefacts hold
  restore: Restorer
  recognizer: str = ""  # role 'recognizer' / 'teacher': the tables' key ...
  display: str = ""  # ... and display name

  def __post_init__(self) -> None:
    if self.role not in ROLES:
      raise ValueError(f"stage {self.stage!r}: role {self.role!r} is not one of {ROLES}")


TRAINED: dict[str, Trained] = {
    t.stage: t
    for t in (
        Trained("teacher", "teacher", tm.restore_teacher, "teacher", "teacher"),
        Trained("deocclusion", "generator", tm.restore_generator),
        # Table 2's "GA w/o attention": G without contextual attention.
        Trained("deocclusion_noca", "generator", tm.restore_generator),
        # Table 2's other completion methods: GFC and IDGAN (training/completion_stages.py).
        Trained("deocclusion_gfc", "generator", tm.restore_generator),
        Trained("deocclusion_idgan", "generator", tm.restore_generator),
        Trained("segmentation", "segmenter", tm.restore_segmenter),
        # The paper's baseline (Table 2): a student-sized ArcFace pretrained on
        # clean faces, then fine-tuned on completed faces; and the teacher
        # fine-tuned the same way, an extra row.
        Trained(
            "pretrain_arcface",
            "recognizer",
            tm.restore_recognizer,
            "arcface_pretrained",
            "student-sized ArcFace (clean faces only)",
        ),
        Trained(
            "finetune_arcface",
            "recognizer",
            tm.restore_recognizer,
            "arcface_finetuned",
            "student-sized ArcFace fine-tuned",
        ),
        Trained(
            "finetune_teacher",
            "recognizer",
            tm.restore_recognizer,
            "teacher_finetuned",
            "teacher fine-tuned",
        ),
        Trained(
            "distill_hard", "recognizer", tm.restore_recognizer, "student_hard", "student (hard)"
        ),
        Trained(
            "distill_soft", "recognizer", tm.restore_recognizer, "student_soft", "student (soft)"
        ),
        # Table 1's OUR row: a student distilled further on AR (paper Sec. 4.1).
        Trained(
            "distill_ar",
            "recognizer",
            tm.restore_recognizer,
            "student_ar",
            "student distilled on AR",
        ),
    )
}

# Table 2 (Fig. 4): each completion method feeds its own students and its own
# fine-tuned baseline. Generator stage -> (stage / key suffix, display name); the
# run's default completion, stage 'deocclusion', is the one the rows above use.
COMPLETIONS: dict[str, tuple[str, str]] = {
    "deocclusion": ("", "GA with attention"),
    "deocclusion_noca": ("noca", "GA w/o attention"),
    "deocclusion_gfc": ("gfc", "GFC"),
    "deocclusion_idgan": ("idgan", "IDGAN"),
}
# the recognisers retrained on each other completion, and the config section
# whose ``generator`` field names the stage whose G completes their faces
RETRAINED: dict[str, str] = {
    "distill_hard": "distillation",
    "distill_soft": "distillation",
    "finetune_arcface": "finetune_arcface",
}


def on_completion(stage: str, generator: str) -> str:
  """The stage retraining ``stage`` (a key of ``RETRAINED``) on ``generator``'s completions."""
  suffix = COMPLETIONS[generator][0]
  return f"{stage}_{suffix}" if suffix else stage


def _retrained_rows() -> list[Trained]:
  rows = []
  for generator, (suffix, name) in COMPLETIONS.items():
    for stage in RETRAINED if suffix else ():
      base = TRAINED[stage]
      rows.append(
          Trained(
              on_completion(stage, generator),
              base.role,
              base.restore,
              f"{base.recognizer}_{suffix}",
              f"{base.display}, {name} completions",
          )
      )
  return rows


TRAINED.update({t.stage: t for t in _retrained_rows()})


def get(stage: str) -> Trained:
  if stage not in TRAINED:
    raise KeyError(f"stage {stage!r} trains nothing that can be restored; stages: {list(TRAINED)}")
  return TRAINED[stage]


def of_role(role: str) -> list[Trained]:
  return [t for t in TRAINED.values() if t.role == role]


def recognizers() -> dict[str, Trained]:
  """Recogniser key (the tables' name) -> its stage's row, the teacher first."""
  return {t.recognizer: t for t in of_role("teacher") + of_role("recognizer")}
