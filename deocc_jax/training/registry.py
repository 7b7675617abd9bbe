"""The stages of a run, in one table: name -> runner and seed offset.

``deocc_jax.main`` runs a config's stages from this table; training derives
each stage's random key (model init, data order, occluders) from its seed
offset. What a stage trains and how it is restored is the trained-run table,
``runs/kinds.py``. Adding a stage is one row here plus its runner (and a row
there when it trains a model used later).

Runners are ``"module:function"`` references, imported when used: the table
sits in training (which reads the seed offsets) yet names the evaluation
stages above it without importing them. Runner: ``fn(config, workdir,
**kwargs)``.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import jax
from ml_collections import ConfigDict


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  runner: str  # "module:function"
  seed_offset: int = 0  # key = seed * 1000 + offset (0: no randomness of its own)
  kwargs: tuple[tuple[str, Any], ...] = ()  # extra runner arguments

  def run(self, config: ConfigDict, workdir: str) -> None:
    resolve(self.runner)(config, workdir, **dict(self.kwargs))


def resolve(ref: str) -> Callable[..., Any]:
  """The function a ``"module:function"`` reference names."""
  module, _, name = ref.partition(":")
  return getattr(importlib.import_module(module), name)


_S = "deocc_jax.training.stages"
_B = "deocc_jax.training.baseline_stages"
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("render_data", "deocc_jax.data.render:run_stage"),
        Stage("rehearsal_data", "deocc_jax.data.rehearsal:run"),
        Stage("teacher", f"{_S}:run_teacher", 1),
        Stage("teacher_embeddings", f"{_S}:run_teacher_embeddings", 7),
        Stage("deocclusion", f"{_S}:run_deocclusion", 2, (("stage", "deocclusion"),)),
        # Table 2's "GA w/o attention": the same batches as 'deocclusion' (paired).
        Stage("deocclusion_noca", f"{_S}:run_deocclusion", 2, (("stage", "deocclusion_noca"),)),
        Stage("segmentation", f"{_S}:run_segmentation", 8),
        Stage("pretrain_arcface", f"{_B}:run_pretrain_arcface", 10),
        Stage("finetune_arcface", f"{_B}:run_finetune", 11, (("stage", "finetune_arcface"),)),
        Stage("finetune_teacher", f"{_B}:run_finetune", 9, (("stage", "finetune_teacher"),)),
        Stage("distill_hard", f"{_S}:run_distill", 3, (("stage", "distill_hard"),)),
        Stage("distill_soft", f"{_S}:run_distill", 4, (("stage", "distill_soft"),)),
        Stage("distill_ar", "deocc_jax.training.ar_distillation_stage:run", 12),
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
