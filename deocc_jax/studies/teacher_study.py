"""The teacher-strength study: does distillation beat fine-tuning
more as the teacher's data and capacity grow?

The paper's premise (Table 2, Sec. 4.4): a student distilled from a strong,
general teacher beats fine-tuning that teacher on completed faces. Each
setting of ``config.teacher_study`` (the i-th entry of its ``identities``,
``images``, ``width`` and ``steps``) trains its own ArcFace teacher (a pool
of that many synthetic identities disjoint from every split -- 0 = the
students' training split -- at that width, for that many steps), then, with the run's generator
and the same batches for every setting (the stages' own seeds), the
teacher fine-tuned (stage 'finetune_teacher') and the students of ``config.teacher_study.students``
('distill_hard' Eq. 12, 'distill_soft' Eq. 17) from that teacher, each under
``<workdir>/teacher_study/<i>/``. All are evaluated on the same held-out
pairs (G-completed faces, true masks, one face of each pair masked, mixture of
categories): teacher on masked / completed faces, fine-tuned, each student,
and the per-fold paired difference student - teacher fine-tuned. Writes
``<workdir>/results/teacher_study.{md,csv,json}``.

Nothing is tuned on the evaluated identities: the settings are fixed in the
config before the run; the held-out pool is the evaluation's own.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import jax
from etils import epath
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.errors import ConfigError
from deocc_jax.evaluation import job, protocols, report, verification
from deocc_jax.evaluation.evaluator import Evaluator
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import factories, kinds, trained_models
from deocc_jax.runs.models import restore_models
from deocc_jax.training import registry
from deocc_jax.utils import files

KEYS = {"identities": int, "images": int, "width": float, "steps": int}
STUDENTS = ("distill_hard", "distill_soft")


def settings(config: ConfigDict) -> list[dict[str, Any]]:
  """The study's settings from ``config.teacher_study``'s typed tuples
  ``identities`` / ``images`` / ``width`` / ``steps`` (setting i: the i-th of
  each; all the same length, none empty)."""
  t = require(config, "teacher_study")
  cols = {k: tuple(t[k]) for k in KEYS}
  sizes = {k: len(v) for k, v in cols.items()}
  if len(set(sizes.values())) != 1 or not next(iter(sizes.values())):
    raise ConfigError(
        f"config.teacher_study.{{{', '.join(KEYS)}}}: one entry per setting, the same number "
        f"in each (got {sizes})"
    )
  out = []
  for i in range(next(iter(sizes.values()))):
    s = {}
    for k, kind in KEYS.items():
      v = cols[k][i]
      if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)):
        raise ConfigError(f"config.teacher_study.{k}[{i}] = {v!r} is not a {kind.__name__}")
      s[k] = kind(v)
    out.append(s)
  return out


def setting_name(s: dict[str, Any]) -> str:
  """``identities=2400,images=20,width=0.5,steps=800``: a setting's row name."""
  return ",".join(f"{k}={s[k]}" for k in KEYS)


def setting_config(config: ConfigDict, s: dict[str, Any]) -> ConfigDict:
  """The run's config with the setting's teacher (data pool, width, steps)."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.data.teacher_identities = s["identities"]
    c.data.teacher_images_per_identity = s["images"] if s["identities"] else 0
    c.teacher.width = s["width"]
    c.teacher.num_steps = s["steps"]
    c.teacher.epochs = 0
    c.teacher.checkpoint_every = s["steps"]
  return c


def _share_generator(workdir: str, sub: str) -> None:
  """The run's G artefact (and data facts) in a setting's workdir: the
  study's stages take their frozen generator from there."""
  src = art.directory(workdir, "deocclusion")
  dst = art.directory(sub, "deocclusion")
  latest = art.file_name(art.select(workdir, "deocclusion"))
  facts = epath.Path(workdir) / trained_models.DATA_FACTS

  def share() -> None:
    dst.mkdir(parents=True, exist_ok=True)
    if not (dst / latest).exists():
      files.write_atomic(dst / latest, (src / latest).read_bytes())
    if facts.exists() and not (epath.Path(sub) / trained_models.DATA_FACTS).exists():
      files.write_atomic(epath.Path(sub) / trained_models.DATA_FACTS, facts.read_bytes())

  files.on_process_0(share, f"copy the run's generator into {sub}")


def run(config: ConfigDict, workdir: str) -> dict[str, Any]:
  t = require(config, "teacher_study")
  e = require(config, "evaluate")
  if str(config.teacher.kind) != "arcface":
    raise ConfigError(
        "the teacher-strength study trains ArcFace teachers here; config.teacher.kind is "
        f"{config.teacher.kind!r}"
    )
  study = settings(config)  # validated before any training
  students = tuple(str(s) for s in t.students)
  if not students or len(set(students)) != len(students) or set(students) - set(STUDENTS):
    raise ConfigError(
        f"config.teacher_study.students: {students!r}: one or both of {list(STUDENTS)}, "
        "each once"
    )
  # recogniser key (the results' and tables' name) -> its display name (runs/kinds.py)
  student_names = {kinds.get(st).recognizer: kinds.get(st).display for st in students}
  mesh = factories.make_mesh(config)
  # The largest teacher pool holds every smaller one (pool ids follow the
  # student pool's): checking it refuses any identity a study model saw.
  largest = max(study, key=lambda s: s["identities"])
  vs = job.held_out_mixture_pairs(
      config, int(t.num_pairs), int(t.max_eval_records), setting_config(config, largest)
  )
  view = vs.views[protocols.MIXTURE]
  a_idx, b_idx, same, fold = vs.pairs
  rows: list[dict[str, Any]] = []
  for i, s in enumerate(study):
    sub = os.path.join(workdir, "teacher_study", str(i))
    c = setting_config(config, s)
    with c.unlocked():
      c.finetune_arcface.input = "completed"
    _share_generator(workdir, sub)
    print(f"-- teacher study setting {i}: {setting_name(s)}", flush=True)
    run = registry.RUNNERS
    run["teacher"](c, sub)
    run["finetune_teacher"](c, sub)
    if "distill_soft" in students:  # Eq. 17's identity centres of this teacher
      run["teacher_embeddings"](c, sub)
    for stage in students:
      run[stage](c, sub)
    models = restore_models(c, sub, recognizers=("teacher", "teacher_finetuned", *student_names))
    ev = Evaluator(models, mesh, int(e.batch_size), int(e.diffusion_iters))

    def one_masked(recognizer: str, kind: str) -> verification.VerificationResult:
      clean = ev.embed(recognizer, vs.clean, (id(vs), "clean"))
      occluded = ev.embed_view(recognizer, view, kind)
      return verification.evaluate_pairs(
          verification.cosine_scores(clean[a_idx], occluded[b_idx]), same, fold
      )

    res = {
        "teacher_masked": one_masked("teacher", "masked"),
        "teacher_completed": one_masked("teacher", "completed"),
        "finetuned": one_masked("teacher_finetuned", "completed"),
        **{n: one_masked(n, "completed") for n in student_names},
    }
    teacher_art = art.read(sub, "teacher")
    rows.append(
        {
            "setting": setting_name(s),
            **s,
            "teacher_train_accuracy": teacher_art.facts["metrics"].get("train/accuracy"),
            "results": {k: r.summary() for k, r in res.items()},
            "folds": {k: r.fold_accuracies for k, r in res.items()},
            "students_minus_finetuned": {
                n: verification.paired_difference(
                    res[n].fold_accuracies, res["finetuned"].fold_accuracies
                )
                for n in student_names
            },
            "finetuned_minus_teacher_completed": verification.paired_difference(
                res["finetuned"].fold_accuracies, res["teacher_completed"].fold_accuracies
            ),
        }
    )
  if jax.process_index() == 0:
    _write(rows, student_names, vs, os.path.join(workdir, "results"))
  return {"settings": rows}


def _pm(r: dict[str, Any], key: str) -> tuple[float, float]:
  return 100 * r["results"][key]["accuracy"], 100 * r["results"][key]["accuracy_std"]


def _diff(d: dict[str, Any]) -> str:
  return f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f} ({d['positive']}/{d['folds']})"


def _write(
    rows: list[dict[str, Any]],
    student_names: dict[str, str],
    vs: protocols.VerificationSet,
    out_dir: str,
) -> None:
  table = [
      {
          "setting": r["setting"],
          "acc": (
              "n/a"
              if r["teacher_train_accuracy"] is None
              else f"{100 * r['teacher_train_accuracy']:.1f}"
          ),
          "tm": _pm(r, "teacher_masked"),
          "tc": _pm(r, "teacher_completed"),
          "ft": _pm(r, "finetuned"),
          **{n: _pm(r, n) for n in student_names},
          **{"d_" + n: _diff(r["students_minus_finetuned"][n]) for n in student_names},
          "d2": _diff(r["finetuned_minus_teacher_completed"]),
      }
      for r in rows
  ]
  report.write_table(
      table,
      [
          ("setting", "teacher (pool identities, images, width, steps)"),
          ("acc", "teacher train acc. % (last log)"),
          ("tm", "teacher, masked"),
          ("tc", "teacher, G-completed"),
          ("ft", "teacher fine-tuned, G-completed"),
          *[(n, f"{d}, G-completed") for n, d in student_names.items()],
          *[
              ("d_" + n, f"{d} - teacher fine-tuned (points; folds +)")
              for n, d in student_names.items()
          ],
          ("d2", "teacher fine-tuned - teacher on completed (points; folds +)"),
      ],
      os.path.join(out_dir, "teacher_study"),
      title=(
          "Teacher-strength study: verification accuracy (%) with one face of each pair "
          f"masked (mixture of categories, G with the true mask), {vs.num_pairs} pairs in 10 "
          "folds, the same pairs for every setting; differences are per-fold paired. "
          f"Identities: {vs.identities}."
      ),
  )
  report.write_json(rows, os.path.join(out_dir, "teacher_study.json"))
  print(epath.Path(os.path.join(out_dir, "teacher_study.md")).read_text())
