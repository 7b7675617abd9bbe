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
    paper: 0.1 every 24 epochs; :func:`resolve_schedule` derives it from
    ``decay_every_epochs``);
  * ``cosine``: cosine decay to 0 over ``num_steps`` after ``cfg.warmup_steps``.
  """
  kind = cfg.schedule
  lr = float(cfg.lr)
  warmup = int(cfg.warmup_steps)
  if kind == "constant":
    sched = optax.constant_schedule(lr)
  elif kind == "step":
    every = int(cfg.decay_every)
    if every <= 0:
      raise ValueError(f"schedule 'step' needs decay_every > 0, got {every}")
    sched = optax.exponential_decay(lr, every, float(cfg.decay_factor), staircase=True)
  elif kind == "cosine":
    sched = optax.cosine_decay_schedule(lr, max(1, num_steps - warmup))
  else:
    raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")
  if warmup > 0:
    sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), sched], [warmup])
  return sched


def optimizer_sections(cfg: ConfigDict) -> list[ConfigDict]:
  """The parts of a stage section that hold optimizer fields (an ``lr``): the
  section itself and / or its sub-sections (``g_optimizer``, ``optimizer``)."""
  children = [v for v in cfg.values() if isinstance(v, ConfigDict) and "lr" in v]
  return ([cfg] if "lr" in cfg else []) + children


def _scale_lr_and_decay(cfg: ConfigDict, steps_per_epoch: int, lr_scale: float) -> None:
  """In place, on an optimizer section: ``lr`` times ``lr_scale``;
  ``decay_every_epochs`` / ``warmup_epochs`` (> 0) into ``decay_every`` /
  ``warmup_steps``."""
  if lr_scale != 1.0:
    cfg.lr = float(cfg.lr) * lr_scale
  if float(cfg.decay_every_epochs) > 0:
    cfg.decay_every = max(1, int(round(float(cfg.decay_every_epochs) * steps_per_epoch)))
  if float(cfg.warmup_epochs) > 0:
    cfg.warmup_steps = max(1, int(round(float(cfg.warmup_epochs) * steps_per_epoch)))


def resolve_schedule(cfg: ConfigDict, num_examples: int) -> ConfigDict:
  """A copy of a stage section whose schedule is in steps, derived from epochs.

  * ``epochs`` > 0: ``num_steps = round(epochs * steps_per_epoch)`` with
    ``steps_per_epoch = num_examples // batch_size`` (the global batch, last
    partial batch dropped; at least 1); otherwise ``num_steps`` stays as set.
  * ``decay_every_epochs`` / ``warmup_epochs`` > 0 (in the section or in its
    optimizer sub-sections, e.g. ``g_optimizer``): ``decay_every`` /
    ``warmup_steps`` in steps.
  * ``base_batch_size`` > 0: the learning rates (``lr`` of the section and of
    its optimizer sub-sections) were chosen for that global batch and are
    scaled linearly, ``lr * batch_size / base_batch_size`` (Goyal et al., 2017).
    0 = no scaling (e.g. the GAN's Adam rates).

  The resolved numbers are recorded in the copy (``steps_per_epoch``,
  ``lr_scale``).
  """
  out = cfg.copy_and_resolve_references()
  batch = int(out.batch_size)
  if batch <= 0:
    raise ValueError(f"batch_size must be positive, got {batch}")
  if num_examples < batch and float(out.epochs) > 0:
    raise ValueError(
        f"an epoch of {num_examples} examples is shorter than one global " f"batch of {batch}"
    )
  spe = max(1, int(num_examples) // batch)
  base = int(out.base_batch_size)
  scale = batch / base if base > 0 else 1.0
  with out.unlocked():
    out.steps_per_epoch = spe
    out.lr_scale = scale
    if float(out.epochs) > 0:
      out.num_steps = max(1, int(round(float(out.epochs) * spe)))
    for section in optimizer_sections(out):
      _scale_lr_and_decay(section, spe, scale)
  return out


def make_optimizer(cfg: ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """SGD (momentum, weight decay), Adam or AdamW, with optional grad clipping."""
  kind = cfg.optimizer
  sched = learning_rate(cfg, num_steps)
  wd = float(cfg.weight_decay)
  if kind == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(wd) if wd else optax.identity(),
        optax.sgd(sched, momentum=float(cfg.momentum), nesterov=bool(cfg.nesterov)),
    )
  elif kind == "adam":
    tx = optax.chain(
        optax.add_decayed_weights(wd) if wd else optax.identity(),
        optax.adam(sched, b1=float(cfg.b1), b2=float(cfg.b2)),
    )
  elif kind == "adamw":
    tx = optax.adamw(sched, b1=float(cfg.b1), b2=float(cfg.b2), weight_decay=wd)
  else:
    raise ValueError(f"unknown optimizer {kind!r}; choose from {OPTIMIZERS}")
  clip = float(cfg.grad_clip)
  if clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx
