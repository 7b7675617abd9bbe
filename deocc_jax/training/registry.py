"""The training stages of a run, in one table: name -> spec -> runner.

Each stage that trains with the shared loop is one :class:`StageSpec`
(``training/stage_spec.py``: seed offset, batch keys, source, plan), run by
the generic ``train_stage``; ``RUNNERS`` adds the stages whose runner does more
(a pretrained teacher has nothing to train; the teacher-embedding job has no
loop). What each stage trains and how it is restored is the trained-run table,
``runs/kinds.py``; the full stage table, with the data and evaluation stages,
is built from real functions at the top (``deocc_jax/main.py:stage_table``).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
from ml_collections import ConfigDict

from deocc_jax.training import ar_distillation_stage, baseline_stages, completion_stages, stages
from deocc_jax.training.stage_spec import StageSpec, train_stage

SPECS: dict[str, StageSpec] = {
    s.name: s
    for s in (
        stages.TEACHER,
        stages.DEOCCLUSION,
        stages.DEOCCLUSION_NOCA,
        completion_stages.DEOCCLUSION_GFC,
        completion_stages.DEOCCLUSION_IDGAN,
        stages.SEGMENTATION,
        baseline_stages.PRETRAIN_ARCFACE,
        baseline_stages.FINETUNE_ARCFACE,
        baseline_stages.FINETUNE_TEACHER,
        stages.DISTILL_HARD,
        stages.DISTILL_SOFT,
        ar_distillation_stage.DISTILL_AR,
        stages.JOINT,
        *completion_stages.RETRAINED,  # Table 2: per completion method
    )
}

Runner = Callable[[ConfigDict, str], None]

RUNNERS: dict[str, Runner] = {
    **{name: functools.partial(train_stage, spec=spec) for name, spec in SPECS.items()},
    "teacher": stages.run_teacher,
    "teacher_embeddings": stages.run_teacher_embeddings,
    "finetune_teacher": baseline_stages.run_finetune_teacher,
}


def get(name: str) -> StageSpec:
  if name not in SPECS:
    raise KeyError(f"unknown training stage {name!r}; stages: {sorted(SPECS)}")
  return SPECS[name]


def stage_key(config: ConfigDict, stage: str) -> jax.Array:
  """The stage's root random key (model init; its data seeds derive alike)."""
  return get(stage).key(config)
