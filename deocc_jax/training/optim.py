"""Optimizers and learning-rate schedules from a config section."""

from __future__ import annotations

import optax
from ml_collections import ConfigDict

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")


def learning_rate(cfg: ConfigDict, num_steps: int) -> optax.Schedule:
  """``cfg.lr`` with ``cfg.schedule``:

  * ``constant``;
  * ``step``: times ``cfg.decay_factor`` every ``cfg.decay_every`` steps (the
    paper: 0.1 every 24 epochs);
  * ``cosine``: cosine decay to 0 over ``num_steps`` after ``cfg.warmup_steps``.
  """
  kind = cfg.get("schedule", "constant")
  lr = float(cfg.lr)
  warmup = int(cfg.get("warmup_steps", 0))
  if kind == "constant":
    sched = optax.constant_schedule(lr)
  elif kind == "step":
    every = int(cfg.decay_every)
    if every <= 0:
      raise ValueError(f"schedule 'step' needs decay_every > 0, got {every}")
    sched = optax.exponential_decay(lr, every, float(cfg.get("decay_factor", 0.1)),
                                    staircase=True)
  elif kind == "cosine":
    sched = optax.cosine_decay_schedule(lr, max(1, num_steps - warmup))
  else:
    raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")
  if warmup > 0:
    sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), sched], [warmup])
  return sched


def make_optimizer(cfg: ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """SGD (momentum, weight decay), Adam or AdamW, with optional grad clipping."""
  kind = cfg.get("optimizer", "sgd")
  sched = learning_rate(cfg, num_steps)
  wd = float(cfg.get("weight_decay", 0.0))
  if kind == "sgd":
    tx = optax.chain(optax.add_decayed_weights(wd) if wd else optax.identity(),
                     optax.sgd(sched, momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False))))
  elif kind == "adam":
    tx = optax.chain(optax.add_decayed_weights(wd) if wd else optax.identity(),
                     optax.adam(sched, b1=float(cfg.get("b1", 0.9)),
                                b2=float(cfg.get("b2", 0.999))))
  elif kind == "adamw":
    tx = optax.adamw(sched, b1=float(cfg.get("b1", 0.9)), b2=float(cfg.get("b2", 0.999)),
                     weight_decay=wd)
  else:
    raise ValueError(f"unknown optimizer {kind!r}; choose from {OPTIMIZERS}")
  clip = float(cfg.get("grad_clip", 0.0))
  if clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx
