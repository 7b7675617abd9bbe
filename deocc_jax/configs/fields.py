"""Field groups several config sections share, each field written out where it is used.

The optimizer / schedule fields (read by ``training/optim.py``) and the train
loop's fields (``training/loop.py`` ``LoopConfig``) recur in every trained
section. A section with its own optimizer writes all of them as its own lines
(``deocc_jax/configs/recognizer_sections.py``); an optimizer sub-section
(``g_optimizer``, ``segmentation.optimizer``, ...) is made by :func:`optimizer`,
whose call names every field: no field comes from a default here.

Optimizer fields:
  optimizer           'sgd' | 'adam' | 'adamw'
  lr                  learning rate (scaled by batch_size / base_batch_size when > 0)
  momentum, nesterov  sgd
  b1, b2              adam / adamw
  weight_decay        decoupled (adamw) or added to the gradient (sgd / adam)
  grad_clip           > 0: clip by global norm
  schedule            'constant' | 'step' (x decay_factor every decay_every steps) | 'cosine'
  decay_factor        'step'
  warmup_steps        linear warm-up from 0
  decay_every_epochs  > 0: decay_every in steps, resolved at the stage's start
  warmup_epochs       > 0: warmup_steps, resolved likewise

Loop fields:
  log_every         metrics interval (steps)
  checkpoint_every  checkpoint interval (steps)
  sample_every      PNG sample grids (0 = never)
  best_metric       keep the best checkpoints by this logged metric ('' = the latest)
  best_mode         'min' | 'max' for best_metric
"""

from __future__ import annotations

from typing import Any

import ml_collections

OPTIMIZER_KEYS = (
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "b1",
    "b2",
    "weight_decay",
    "grad_clip",
    "schedule",
    "decay_factor",
    "warmup_steps",
    "decay_every_epochs",
    "warmup_epochs",
)
LOOP_KEYS = ("log_every", "checkpoint_every", "sample_every", "best_metric", "best_mode")


def optimizer(
    *,
    optimizer: str,
    lr: float,
    momentum: float,
    nesterov: bool,
    b1: float,
    b2: float,
    weight_decay: float,
    grad_clip: float,
    schedule: str,
    decay_factor: float,
    warmup_steps: int,
    decay_every_epochs: float,
    warmup_epochs: float,
) -> ml_collections.ConfigDict:
  """An optimizer sub-section; every field is an argument (none has a default)."""
  return ml_collections.ConfigDict(
      dict(
          optimizer=optimizer,
          lr=lr,
          momentum=momentum,
          nesterov=nesterov,
          b1=b1,
          b2=b2,
          weight_decay=weight_decay,
          grad_clip=grad_clip,
          schedule=schedule,
          decay_factor=decay_factor,
          warmup_steps=warmup_steps,
          decay_every_epochs=decay_every_epochs,
          warmup_epochs=warmup_epochs,
      )
  )


def optimizer_fields(**fields: Any) -> dict[str, Any]:
  """Optimizer fields of a standalone section (tests, tools): ``fields`` over
  plain defaults (SGD, lr 0.1, momentum 0.9, constant schedule). A misspelt
  field raises. The config's sections never use it: they write every field."""
  unknown = sorted(set(fields) - set(OPTIMIZER_KEYS))
  if unknown:
    raise KeyError(f"not optimizer fields: {unknown}; known: {sorted(OPTIMIZER_KEYS)}")
  plain = dict(
      optimizer="sgd",
      lr=0.1,
      momentum=0.9,
      nesterov=False,
      b1=0.9,
      b2=0.999,
      weight_decay=0.0,
      grad_clip=0.0,
      schedule="constant",
      decay_factor=0.1,
      warmup_steps=0,
      decay_every_epochs=0,
      warmup_epochs=0,
  )
  return {**plain, **fields}
