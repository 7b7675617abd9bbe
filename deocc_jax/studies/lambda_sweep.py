"""lambda_i and T chosen on identities set apart for it (stage ``lambda_sweep``).

The paper states neither the instance term's weight lambda_i (Eq. 16) nor the
temperature T of L_CE. This stage trains one student per (lambda_i, T) of
``config.lambda_sweep`` -- the same initialisation and batches, the run's
teacher and G, ``config.lambda_sweep.instance`` form of the instance term --
and scores each on ``config.evaluate.split``, which must be a pool of
identities no model trained on and no table reports: CelebA's ``'tuning'``
split (``config.data.tuning_identities``), the synthetic ``'validation'``
split. CelebA's random 6:1 'validation' images share their identities with
training and cannot serve (the held-out check refuses them); the tables'
own identities ('heldout', 'test') are refused here.

**The rule.** The setting with the highest 10-fold verification accuracy at
the last step (one face masked, G-completed, mixture of occluders); a tie
(equal to 1e-9) goes to the smaller lambda_i, then to T closest to 1 (the
literal reading of the paper's cross-entropy). Writes
``results/lambda_sweep.{md,json}``: every setting, its per-fold paired
difference to the chosen one, and the overrides that carry the choice into the
main run (``--config.distillation.lambda_i=... --config.distillation.temperature=...``).

    python -m deocc_jax.main --config=configs/paper_celeba.py:lambda_sweep --workdir=runs/paper
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import jax
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.errors import ConfigError
from deocc_jax.evaluation import report, verification
from deocc_jax.studies import ablation

TABLE_SPLITS = ("heldout", "test")  # the tables' identities: never tuned on


def settings(config: ConfigDict) -> list[tuple[str, dict[str, Any]]]:
  """(name, ``config.distillation`` overrides) of every (lambda_i, T)."""
  s = require(config, "lambda_sweep")
  d = require(config, "distillation")
  instance = str(s.instance)
  if instance not in ("hard", "soft"):
    raise ConfigError(f"config.lambda_sweep.instance must be 'hard' or 'soft', got {instance!r}")
  grid = [tuple(float(x) for x in s[k]) for k in ("lambda_i", "temperature")]
  for key, values in zip(("lambda_i", "temperature"), grid):
    if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
      raise ConfigError(
          f"config.lambda_sweep.{key} must list distinct positive values, got {values}"
      )
  base = ablation.setting_overrides(f"ce_pair_angle_{instance}", d)
  return [
      (f"li{li:g}_T{t:g}", dict(base, lambda_i=li, temperature=t))
      for li, t in itertools.product(*grid)
  ]


def choose(results: dict[str, dict[str, Any]]) -> str:
  """The rule of the module docstring: best last-step accuracy, then the
  smaller lambda_i, then T closest to 1."""

  def key(name: str):
    r = results[name]
    acc = round(r["curve"][-1]["one"]["accuracy"], 9)
    o = r["overrides"]
    return (-acc, o["lambda_i"], abs(o["temperature"] - 1.0))

  return min(results, key=key)


def run(config: ConfigDict, workdir: str) -> dict[str, Any]:
  s = require(config, "lambda_sweep")
  split = str(require(config, "evaluate.split"))
  if split in TABLE_SPLITS:
    raise ConfigError(
        f"config.evaluate.split={split!r} holds the identities the tables report: lambda_i and "
        "T are chosen on a pool set apart for it ('tuning' with config.data.tuning_identities "
        "for CelebA, 'validation' for the synthetic faces)"
    )
  grid = settings(config)
  y = ablation.yardstick(config, workdir, int(s.num_pairs), int(s.max_eval_records))
  results: dict[str, Any] = {}
  for name, over in grid:
    print(f"-- lambda_sweep {name}", flush=True)
    results[name] = ablation.train_and_score(
        config,
        workdir,
        y,
        os.path.join(workdir, "lambda_sweep"),
        name,
        over,
        int(s.num_steps),
        int(s.eval_every),
    )
  best = choose(results)
  out = {
      "split": split,
      "identities": y.vs.identities,
      "chosen": best,
      "chosen_overrides": {
          "distillation.lambda_i": results[best]["overrides"]["lambda_i"],
          "distillation.temperature": results[best]["overrides"]["temperature"],
      },
      "settings": results,
  }
  if jax.process_index() == 0:
    _write(out, y.vs, os.path.join(workdir, "results"))
  return out


def _write(out: dict[str, Any], vs: Any, out_dir: str) -> None:
  results, best = out["settings"], out["chosen"]
  ref = results[best]["curve"][-1]["fold_accuracies_one"]
  rows = []
  for name, r in results.items():
    last = r["curve"][-1]
    dd = verification.paired_difference(last["fold_accuracies_one"], ref)
    rows.append(
        {
            "lambda_i": f"{r['overrides']['lambda_i']:g}",
            "T": f"{r['overrides']['temperature']:g}",
            "one": (100 * last["one"]["accuracy"], 100 * last["one"]["accuracy_std"]),
            "diff": "chosen" if name == best else (100 * dd["mean"], 100 * dd["std"]),
            "positive": "" if name == best else f"{dd['positive']} / {dd['folds']}",
        }
    )
  o = out["chosen_overrides"]
  report.write_table(
      rows,
      [
          ("lambda_i", "lambda_i"),
          ("T", "T"),
          ("one", "acc. % (one masked, G-completed)"),
          ("diff", "minus the chosen (points, mean ± std over folds)"),
          ("positive", "folds above the chosen"),
      ],
      os.path.join(out_dir, "lambda_sweep"),
      title=(
          f"lambda_i and T on split {out['split']!r}: {len(vs.clean)} faces, {vs.num_pairs} "
          f"pairs, one student per setting. Chosen (highest accuracy; ties: smaller lambda_i, "
          f"then T closest to 1): --config.distillation.lambda_i={o['distillation.lambda_i']:g} "
          f"--config.distillation.temperature={o['distillation.temperature']:g}. Identities: "
          f"{vs.identities}."
      ),
  )
  report.write_json(out, os.path.join(out_dir, "lambda_sweep.json"))
