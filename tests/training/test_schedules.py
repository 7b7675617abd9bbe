"""Schedules from epochs (issue 10, fix 6): steps, decay points and lr follow
from ``epochs``, the training set's size and the global batch."""

import numpy as np
import pytest
from ml_collections import ConfigDict

from deocc_jax.configs import fields
from deocc_jax.training import optim, stage_spec, stages
from tests.helpers import config_files  # noqa: E402

N = 155_555  # training images (any size; CelebA's 6:1 split is about this)


def _epochs_of(section: ConfigDict, n: int) -> tuple[float, float, float]:
  """(epochs trained, epochs between decays, lr) of a resolved section, from
  the raw numbers: examples seen = steps x global batch."""
  seen = section.num_steps * section.batch_size
  decay = section.decay_every * section.batch_size if section.schedule == "step" else 0
  return seen / n, decay / n, float(section.lr)


@pytest.mark.parametrize(
    "spec,batch,lr",
    [
        ("configs/paper_celeba.py", 128, 0.1),
        ("configs/paper_celeba.py:gpu8", 128, 0.1),
        ("configs/paper_celeba.py:tpu_pod", 256, 0.2),
    ],
)
def test_paper_configs_train_72_epochs_decaying_every_24(spec, batch, lr):
  c = config_files.load(spec)
  r = stage_spec.resolved(c, "distillation", source=range(N))
  epochs, decay_epochs, got_lr = _epochs_of(r, N)
  assert r.batch_size == batch
  # Whole steps per epoch (last partial batch dropped): within one batch of 72 / 24.
  assert abs(epochs - 72) < 72 * batch / N + 1e-9 and abs(decay_epochs - 24) < 24 * batch / N
  assert got_lr == pytest.approx(lr)  # linear scaling from the base batch 128
  # The optax schedule: lr until the first decay point, then x0.1, x0.01 ...
  sched = optim.learning_rate(r, r.num_steps)
  d = r.decay_every
  np.testing.assert_allclose(
      [
          float(sched(0)),
          float(sched(d - 1)),
          float(sched(d)),
          float(sched(2 * d)),
          float(sched(r.num_steps - 1)),
      ],
      [lr, lr, lr * 0.1, lr * 0.01, lr * 0.01],
      rtol=1e-6,
  )


def test_resolve_schedule_fields():
  opt = fields.optimizer_fields
  cfg = ConfigDict(
      dict(
          batch_size=64,
          epochs=2.5,
          base_batch_size=256,
          num_steps=7,
          **opt(decay_every_epochs=1, warmup_epochs=0.5, lr=0.4),
          g_optimizer=ConfigDict(opt(lr=1e-3, decay_every_epochs=2)),
          d_optimizer=ConfigDict(opt(lr=2e-3)),
      )
  )
  cfg.lock()
  r = optim.resolve_schedule(cfg, 1000)  # 15 steps per epoch (1000 // 64)
  assert (r.steps_per_epoch, r.num_steps, r.decay_every, r.warmup_steps) == (15, 38, 15, 8)
  assert r.lr == pytest.approx(0.1) and r.lr_scale == pytest.approx(0.25)
  assert r.g_optimizer.lr == pytest.approx(2.5e-4) and r.g_optimizer.decay_every == 30
  assert r.d_optimizer.lr == pytest.approx(5e-4)
  assert cfg.num_steps == 7 and cfg.lr == 0.4  # the config itself is untouched
  # epochs = 0 keeps num_steps; no base batch keeps lr.
  r = optim.resolve_schedule(
      ConfigDict(dict(batch_size=8, epochs=0, num_steps=5, base_batch_size=0, **opt(lr=0.3))), 100
  )
  assert (r.num_steps, r.lr) == (5, 0.3)
  with pytest.raises(ValueError, match="shorter than one global batch"):
    optim.resolve_schedule(
        ConfigDict(dict(batch_size=128, epochs=1, base_batch_size=0, **opt(lr=0.1))), 100
    )


def test_stage_runners_use_the_resolved_schedule(monkeypatch):
  """The distillation stage builds its optimizer and loop from epochs."""
  from deocc_jax.training import distillation_stage

  c = config_files.load("configs/paper_celeba.py")
  seen = {}

  def fake_make_fns(cfg, *args, **kwargs):
    seen["cfg"] = cfg
    raise RuntimeError("stop")

  class _Teacher:
    params, apply, embed_dim, num_classes, name, metadata = {}, None, 8, 10, "fake", {}

  monkeypatch.setattr(distillation_stage, "make_fns", fake_make_fns)
  monkeypatch.setattr(
      stages,
      "make_source",
      lambda config, split: type("S", (), {"__len__": lambda self: N, "num_classes": 10})(),
  )
  monkeypatch.setattr(stages, "generator_completion", lambda *a, **k: ({}, None, {}))
  with pytest.raises(RuntimeError, match="stop"):
    stages.distill_fns(c, "/nonexistent", "distill_hard", None, teacher=_Teacher())
  r = seen["cfg"]
  assert r.num_steps == 72 * (N // 128) and r.decay_every == 24 * (N // 128)
