"""The loss ablation of the paper's Fig. 5 (section 4.4): train and evaluate
one student per loss setting.

    ce                   L_CE
    ce_pair              L_CE + lambda_p L_p
    ce_pair_angle        L_CE + lambda_p L_p + lambda_t L_t
    ce_pair_angle_hard   L_CE + lambda_i L_i  + lambda_p L_p + lambda_t L_t   (OUR-Hard)
    ce_pair_angle_soft   L_CE + lambda_i L_i* + lambda_p L_p + lambda_t L_t   (OUR-Soft)

Every setting trains the distillation stage from the same initialisation on
the same batches (the ``distill_hard`` seeds) with the run's teacher and
generator, under ``<workdir>/ablation/<setting>/``, keeping a checkpoint and
its trained artefact every ``config.ablation.eval_every`` steps. Each artefact
is evaluated on
the held-out identities: verification accuracy (one / both faces masked, G
completions, mixture of categories) and a **held-out distillation loss**
-- the Eq. 16 relational terms between the teacher on clean faces and the
student on completed faces, over batches of the training batch size (hard
instance term: held-out identities have no centroids) -- the same yardstick
for every setting. Writes ``<workdir>/results/ablation.{md,csv,json}`` and
``ablation_losses.png`` (training loss, held-out loss and accuracy against
step: the shape of Fig. 5).

Run: ``python -m deocc_jax.main --config=configs/synthetic.py:ablation --workdir=DIR``
(the run's earlier stages resume / are reused from DIR).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

import jax
import numpy as np
from etils import epath
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.errors import ConfigError
from deocc_jax.evaluation import job, protocols, report, verification
from deocc_jax.evaluation.evaluator import Evaluator
from deocc_jax.losses import distillation
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import factories, trained_models
from deocc_jax.runs.models import Models, config_checkpoints, restore_models
from deocc_jax.training import registry, stage_spec, stages

SETTINGS: dict[str, str] = {
    "ce": "CE",
    "ce_pair": "CE + pair",
    "ce_pair_angle": "CE + pair + angle",
    "ce_pair_angle_hard": "CE + pair + angle + hard instance",
    "ce_pair_angle_soft": "CE + pair + angle + soft instance",
}


def setting_overrides(name: str, d: ConfigDict) -> dict[str, Any]:
  """``config.distillation`` fields of one setting (lambdas from ``d``)."""
  if name not in SETTINGS:
    raise ConfigError(
        f"config.ablation.settings: unknown setting {name!r}; " f"choose from {list(SETTINGS)}"
    )
  lp = float(d.lambda_p) if "pair" in name else 0.0
  lt = float(d.lambda_t) if "angle" in name else 0.0
  instance = "hard" if name.endswith("hard") else "soft" if name.endswith("soft") else "none"
  return {
      "use_ce": True,
      "instance": instance,
      "lambda_p": lp,
      "lambda_t": lt,
      "lambda_i": float(d.lambda_i) if instance != "none" else 0.0,
  }


def heldout_losses(
    teacher_emb: np.ndarray, student_emb: np.ndarray, batch: int, lambdas: dict[str, float]
) -> dict[str, float]:
  """Mean Eq. 16 relational terms over consecutive batches of ``batch`` rows."""
  fn = jax.jit(
      lambda t, s: distillation.total_distillation_loss(t, s, instance_mode="hard", **lambdas)
  )
  terms: dict[str, list[float]] = {}
  for i in range(0, len(teacher_emb) - batch + 1, batch):
    total, t = fn(teacher_emb[i : i + batch], student_emb[i : i + batch])
    for k, v in {"total": total, **t}.items():
      terms.setdefault(k, []).append(float(v))
  return {k: float(np.mean(v)) for k, v in terms.items() if k != "ce"}


def ablation_steps(config: ConfigDict) -> int:
  """Steps per setting: ``ablation.epochs`` x (training faces // the
  distillation's global batch) when epochs > 0, else ``ablation.num_steps``."""
  a = require(config, "ablation")
  epochs = float(a.epochs)
  if epochs <= 0:
    return int(a.num_steps)
  size = len(factories.make_source(config, "train"))
  batch = int(require(config, "distillation.batch_size"))
  return max(1, int(round(epochs * (size // batch))))


def paired_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
  """Per-fold paired differences at the last step: each setting minus the
  first (CE) and minus the setting before it (one loss term added)."""
  names = list(results)
  rows = []
  for i, name in enumerate(names[1:], start=1):
    for ref in dict.fromkeys((names[0], names[i - 1])):
      a = results[name]["curve"][-1]["fold_accuracies_one"]
      b = results[ref]["curve"][-1]["fold_accuracies_one"]
      dd = verification.paired_difference(a, b)
      rows.append(
          {
              "a": results[name]["label"],
              "b": results[ref]["label"],
              "diff": (100 * dd["mean"], 100 * dd["std"]),
              "positive": f"{dd['positive']} / {dd['folds']}",
          }
      )
  return rows


@dataclasses.dataclass
class Yardstick:
  """What every student of a study is scored with: the run's models, the
  evaluator, the held-out set and its G completions, the teacher on its clean
  faces, the held-out loss batches' order and lambdas, the mesh."""

  base: Models
  ev: Evaluator
  vs: Any
  completed: np.ndarray
  teacher_clean: np.ndarray
  order: np.ndarray
  lambdas: dict[str, float]
  mesh: Any


def yardstick(config: ConfigDict, workdir: str, num_pairs: int, max_records: int) -> Yardstick:
  """The run's teacher and G, and the pairs of ``config.evaluate.split`` (checked
  to share no identity with training) occluded with the mixture, completed by G."""
  d = require(config, "distillation")
  e = require(config, "evaluate")
  mesh = factories.make_mesh(config)
  base: Models = restore_models(
      config, workdir, config_checkpoints(config), recognizers=("teacher",)
  )
  if base.complete is None:
    raise FileNotFoundError(
        f"the study needs the run's generator: stage 'deocclusion' "
        f"has no trained artefacts in {workdir}"
    )
  ev = Evaluator(base, mesh, int(e.batch_size), int(e.diffusion_iters))
  # refuses identities the models trained on
  vs = job.held_out_mixture_pairs(config, num_pairs, max_records)
  view = vs.views[protocols.MIXTURE]
  lambdas = {k: float(d[k]) for k in ("lambda_i", "lambda_p", "lambda_t")}
  return Yardstick(
      base,
      ev,
      vs,
      ev.images(view, "completed"),
      ev.embed("teacher", vs.clean, (id(vs), "clean")),
      # a fixed order for the held-out loss batches (mixes identities like training)
      np.random.default_rng(int(e.seed)).permutation(len(vs.clean)),
      lambdas,
      mesh,
  )


def run(config: ConfigDict, workdir: str) -> dict[str, Any]:
  a = require(config, "ablation")
  d = require(config, "distillation")
  settings = [str(s) for s in a.settings]
  for s in settings:
    setting_overrides(s, d)  # validate every name before any training
  y = yardstick(config, workdir, int(a.num_pairs), int(a.max_eval_records))
  num_steps = ablation_steps(config)
  results: dict[str, Any] = {}
  for name in settings:
    print(f"-- ablation setting {name}: {SETTINGS[name]}", flush=True)
    results[name] = {"label": SETTINGS[name]}
    results[name].update(
        train_and_score(
            config,
            workdir,
            y,
            os.path.join(workdir, "ablation"),
            name,
            setting_overrides(name, d),
            num_steps,
            int(a.eval_every),
        )
    )
  if jax.process_index() == 0:
    _write(results, y.vs, os.path.join(workdir, "results"))
  return results


def train_and_score(
    config: ConfigDict,
    workdir: str,
    y: Yardstick,
    out_dir: str,
    name: str,
    over: dict[str, Any],
    num_steps: int,
    eval_every: int,
) -> dict[str, Any]:
  """Trains one student (``config.distillation`` with ``over``) on the
  ``distill_hard`` batches from its initialisation under ``out_dir/name``,
  keeping an artefact every ``eval_every`` steps, and scores each on the
  held-out set: {'overrides', 'curve', 'train'}."""
  d = require(config, "distillation")
  over = dict(over)
  over["num_steps"] = num_steps
  over["checkpoint_every"] = eval_every
  over["log_every"] = min(int(d.log_every), eval_every)
  run_cfg = copy.deepcopy(config)
  with run_cfg.unlocked():
    run_cfg.checkpoint.keep = max(1, num_steps // eval_every + 1)

  def plan(_, __, source, mesh) -> stage_spec.Plan:
    c, teacher, source, init_fn, step_fn, frozen, used = stages.distill_fns(
        run_cfg,
        workdir,
        name,
        mesh,
        over,
        teacher=y.base.teacher,
        generator=y.base.generator,
        source=source,
    )
    facts = factories.data_facts(config, workdir)
    spec = trained_models.student_spec(
        c, config, teacher, source.num_classes, facts, generator=used
    )
    return stage_spec.Plan(c, init_fn, step_fn, spec, frozen=frozen)

  # the distill_hard stage's key and batches, this setting's losses
  hard = dataclasses.replace(registry.get("distill_hard"), plan=plan)
  stage_spec.train_stage(run_cfg, out_dir, hard, name=name)
  a_idx, b_idx, same, fold = y.vs.pairs
  curve = []
  for step in art.steps(out_dir, name):
    embed = trained_models.embedder_from(art.read(out_dir, name, step))
    s_emb = y.ev.map(embed, y.completed, f"{os.path.basename(out_dir)}/{name}")
    student_clean = y.ev.map(embed, y.vs.clean, f"{os.path.basename(out_dir)}/{name}")
    one = verification.evaluate_pairs(
        verification.cosine_scores(student_clean[a_idx], s_emb[b_idx]), same, fold
    )
    both = verification.evaluate_pairs(
        verification.cosine_scores(s_emb[a_idx], s_emb[b_idx]), same, fold
    )
    losses = heldout_losses(y.teacher_clean[y.order], s_emb[y.order], int(d.batch_size), y.lambdas)
    curve.append(
        {
            "step": int(step),
            "one": one.summary(),
            "both": both.summary(),
            "fold_accuracies_one": one.fold_accuracies,
            "heldout": losses,
        }
    )
  # The training log is process 0's (the metrics writer's); so are the results.
  train = (
      report.read_metric_series(
          os.path.join(out_dir, name, "logs", "metrics.jsonl"), ["loss/total", "loss/ce"]
      )
      if jax.process_index() == 0
      else {}
  )
  return {
      "overrides": over,
      "curve": curve,
      "train": {k: [v[0].tolist(), v[1].tolist()] for k, v in train.items()},
  }


def _write(results: dict[str, Any], vs: protocols.VerificationSet, out_dir: str) -> None:
  rows = []
  for name, r in results.items():
    last = r["curve"][-1]
    best = max(r["curve"], key=lambda p: p["one"]["accuracy"])
    train_total = r["train"].get("loss/total", [[], []])[1]
    rows.append(
        {
            "setting": r["label"],
            "steps": last["step"],
            "train": train_total[-1] if train_total else None,
            "heldout": last["heldout"]["total"],
            "one": (100 * last["one"]["accuracy"], 100 * last["one"]["accuracy_std"]),
            "both": (100 * last["both"]["accuracy"], 100 * last["both"]["accuracy_std"]),
            "best": 100 * best["one"]["accuracy"],
            "best_step": best["step"],
        }
    )
  report.write_table(
      rows,
      [
          ("setting", "loss setting"),
          ("steps", "steps"),
          ("train", "final train loss"),
          ("heldout", "held-out distillation loss"),
          ("one", "acc. % (one masked)"),
          ("both", "acc. % (both masked)"),
          ("best", "best acc. % (one)"),
          ("best_step", "at step"),
      ],
      os.path.join(out_dir, "ablation"),
      title=(
          f"Loss ablation (Fig. 5): {len(vs.clean)} held-out faces, {vs.num_pairs} pairs; "
          "student on G-completed faces (true masks), mixture of categories. Held-out "
          "distillation loss = lambda_i L_i (hard) + lambda_p L_p + lambda_t L_t between "
          "the teacher on clean and the student on completed faces. Identities: "
          f"{vs.identities}."
      ),
      float_format="{:.3f}",
  )
  report.write_table(
      paired_rows(results),
      [
          ("a", "A"),
          ("b", "B"),
          ("diff", "A - B (points, mean ± std over folds)"),
          ("positive", "folds A > B"),
      ],
      os.path.join(out_dir, "ablation_paired"),
      title=(
          f"Loss ablation: per-fold paired differences of verification accuracy at the last "
          f"step (one face masked, G-completed; same {vs.num_pairs} pairs and folds). "
          f"Identities: {vs.identities}."
      ),
  )
  series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
  for name, r in results.items():
    steps = np.array([p["step"] for p in r["curve"]])
    label = r["label"]
    for k, v in r["train"].items():
      series.setdefault(f"train {k}", {})[label] = (np.asarray(v[0]), np.asarray(v[1]))
    series.setdefault("held-out distillation loss", {})[label] = (
        steps,
        np.array([p["heldout"]["total"] for p in r["curve"]]),
    )
    series.setdefault("held-out accuracy (one masked)", {})[label] = (
        steps,
        np.array([p["one"]["accuracy"] for p in r["curve"]]),
    )
  report.plot_loss_curves(
      series,
      os.path.join(out_dir, "ablation_losses.png"),
      title="Loss settings (Fig. 5): training and held-out",
  )
  report.write_json(results, os.path.join(out_dir, "ablation.json"))
  print(epath.Path(os.path.join(out_dir, "ablation.md")).read_text())
