"""The evaluation job: the paper's tables from a run's checkpoints.

``run(config, workdir)`` (stage ``evaluate`` of the main job, and
``python -m deocc_jax.evaluate``) restores every model of the run
(:mod:`deocc_jax.runs.models`), builds the seeded evaluation sets
(the held-out ones read batch by batch, :mod:`deocc_jax.evaluation.streaming`;
LFW / AR by :mod:`deocc_jax.evaluation.protocols`), computes every input
image of a batch -- masked, completed by G with the true or the segmenter's
predicted mask, mean-face fill, diffusion fill -- and its embeddings sharded
over all devices and hosts, keeping only the embeddings (host memory does
not grow with the number of faces), and writes under ``<results_dir>`` (default
``<workdir>/results``; a local path or any ``etils.epath`` URI such as
``gs://...``). The training source's evaluation split must share no
identity with the split the models trained on (:func:`held_out_source`
refuses otherwise); LFW / AR faces are aligned by 5 landmarks onto the mean
training landmarks (paper Sec. 4.1). Every table's title says whose
identities it uses.

    verification_<set>.md/.csv          recogniser x input, mixture of categories
                                        (Fig. 4 / Table 2 shape; one / both faces masked,
                                        10-fold accuracy, AUC, EER, TAR@FAR 1e-3 / 1e-4)
    table2_<set>.md/.csv                recogniser x completion method (accuracy, one masked,
                                        10-fold cross-validated)
    table2_best_threshold_<set>.md/.csv the same at the best threshold over all pairs (the
                                        paper's LFW protocol)
    completion_methods_<set>.md/.csv    Table 2 proper: each recogniser retrained on GFC / GA
                                        w/o attention / IDGAN / GA w/ attention completions,
                                        scored on its own completion ("—": stage not run)
    completion_methods_paired_<set>.md/.csv  the same minus GA w/ attention, per fold
    by_category_<set>_{one,both}.md/.csv  accuracy per mask category
    identification_<set>.md/.csv        rank-1 on AR1 (sunglasses) / AR2 (scarf) per input
                                        (Table 1 shape) and cmc_<set>.md
    segmentation_iou.md/.csv            occlusion segmenter IoU per category
    roc_<set>.png, cmc_<set>.png, accuracy_<set>.png (and _best_threshold_), completions_<set>.png,
    training_losses.png                 plots
    calibration.json                    thresholds per recogniser / input (for inference)
    results.json                        everything above as numbers
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
from etils import epath
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.data import masks as masks_lib
from deocc_jax.errors import ConfigError
from deocc_jax.evaluation import protocols, report, streaming
from deocc_jax.evaluation.evaluator import INPUTS, Evaluator, verification_recognizers
from deocc_jax.evaluation.evaluators import completion_grid, completion_methods
from deocc_jax.evaluation.evaluators import identification as identification_eval
from deocc_jax.evaluation.evaluators import segmentation as segmentation_eval
from deocc_jax.evaluation.evaluators import training_curves
from deocc_jax.evaluation.evaluators import verification as verification_eval
from deocc_jax.evaluation.evaluators import verification_tables
from deocc_jax.runs import factories
from deocc_jax.runs.models import config_checkpoints, restore_models

# ------------------------------------------------------- held-out identities


class HeldOutError(ValueError):
  """An evaluation set shares identities with the data the models trained on."""


def identity_keys(source: Any) -> set[str]:
  """The (global) identity names of a face source, as strings."""
  names = getattr(source, "identity_names", None)
  if names is None:
    names = getattr(source, "identities", None)  # synthetic: global identity ids
  if names is None:
    raise HeldOutError(
        f"{source!r} does not say which identities it holds "
        "(identity_names / identities): cannot check it is held out"
    )
  return {str(n) for n in np.asarray(names).ravel().tolist()}


def held_out_source(config: ConfigDict) -> tuple[Any, dict[str, Any]]:
  """The training source's ``config.evaluate.split``, checked to share no identity
  with the split every training stage reads ('train': teacher trained here,
  G, segmenter, students, fine-tuned baseline); raises :class:`HeldOutError`
  otherwise. Returns (source, {'split', 'identities', 'trained_identities',
  'shared', 'description'})."""
  split = str(require(config, "evaluate.split"))
  kind = str(config.data.source)
  trained = identity_keys(factories.make_source(config, "train"))
  pool = 0
  if (
      str(config.teacher.kind) == "arcface" and int(config.data.teacher_identities) > 0
  ):  # the teacher's own pool
    pool_ids = identity_keys(factories.teacher_source(config))
    pool = len(pool_ids)
    trained |= pool_ids
  src = factories.make_source(config, split)
  held = identity_keys(src)
  shared = sorted(trained & held)
  if shared:
    raise HeldOutError(
        f"config.evaluate.split={split!r} of data source {kind!r} shares {len(shared)} of its "
        f"{len(held)} identities (e.g. {shared[:5]}) with the 'train' split every trained "
        "model saw; refusing to write verification / identification tables on them. Hold "
        "identities out of training: for CelebA set config.data.holdout_identities (e.g. "
        "1000) and config.evaluate.split='heldout' (partition 'random_6_1' splits images, so "
        "its 'validation' identities were trained on); the synthetic splits are "
        "identity-disjoint."
    )
  how = (
      "excluded from every training stage by config.data.holdout_identities"
      if split == "heldout"
      else f"split {split!r}, disjoint from the training split"
  )
  desc = (
      f"{len(held)} {kind} identities ({how}; 0 shared with the {len(trained)} training "
      "identities" + (f", {pool} of them the teacher's pool" if pool else "") + ")"
  )
  return src, {
      "split": split,
      "identities": len(held),
      "trained_identities": len(trained),
      "shared": 0,
      "description": desc,
  }


def held_out_mixture_pairs(
    config: ConfigDict, num_pairs: int, max_records: int, checked: ConfigDict | None = None
) -> protocols.VerificationSet:
  """Verification pairs of the held-out split, occluded with the mixture of
  categories (the ablation's and the teacher study's yardstick); the
  identities are checked against the training data of ``checked`` (default
  ``config``) and described in ``vs.identities``."""
  held_src, held = held_out_source(checked if checked is not None else config)
  vs = protocols.synthetic_verification_set(
      held_src,
      int(num_pairs),
      int(require(config, "evaluate.seed")),
      factories.mask_config(config),
      (protocols.MIXTURE,),
      int(max_records) or None,
  )
  vs.identities = held["description"]
  return vs


def _ar_pass(workdir: str, models: Any) -> dict[str, Any]:
  """The AR image indices the restored 'distill_ar' student trained on (its
  artefact's facts) and the probes left to AR's identification; {} without it."""
  if "student_ar" not in models.recognizers:
    return {}
  from deocc_jax.data import ar_distillation
  from deocc_jax.runs import artefacts as art

  ar = art.read_facts(workdir, "distill_ar", models.steps["distill_ar"])["ar"]
  probes = [
      i
      for s in ("sunglasses", "scarf")
      for i in ar_distillation.probe_indices(s, ar["train_images"])
  ]
  return {**ar, "probe_images": sorted(probes)}


def _ranges(indices: Any) -> str:
  """[8, 9, 10, 12] -> '8-10, 12'."""
  xs, out = sorted(int(i) for i in indices), []
  for x in xs:
    if out and x == out[-1][1] + 1:
      out[-1][1] = x
    else:
      out.append([x, x])
  return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in out)


def _external_identities(name: str, teacher_name: str, undetected: int) -> str:
  aligned = (
      ""
      if not undetected
      else f"; {undetected} faces without landmarks placed by the default layout"
  )
  return (
      f"the {name} identities (an external set, none in this run's training data; "
      f"the pretrained teacher's ({teacher_name}) own training set is not checked"
      f"{aligned})"
  )


# --------------------------------------------------------------------- sets


def _check_inputs(config: ConfigDict) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
  """(inputs, categories, verification conditions) of ``config.evaluate``, checked."""
  e = require(config, "evaluate")
  inputs = tuple(e.inputs)
  bad = [k for k in inputs if k not in INPUTS]
  if bad:
    raise ConfigError(
        f"config.evaluate.inputs has unknown input(s) {bad}; " f"choose from {list(INPUTS)}"
    )
  categories = tuple(e.categories)
  unknown = [c for c in categories if c not in masks_lib.CATEGORIES]
  if unknown:
    raise ConfigError(
        f"config.evaluate.categories has unknown categories {unknown}; choose from "
        f"{list(masks_lib.CATEGORIES)}"
    )
  by_category = str(e.by_category)
  if by_category not in ("mixture", "views"):
    raise ConfigError(
        f"config.evaluate.by_category is {by_category!r}; choose 'mixture' (the mixture's "
        "pairs grouped by occluder category) or 'views' (every face occluded per category)"
    )
  conditions = (protocols.MIXTURE,) + (categories if by_category == "views" else ())
  retrained = str(require(config, "evaluate.retrained_inputs"))
  if retrained not in ("all", "own"):
    raise ConfigError(
        f"config.evaluate.retrained_inputs is {retrained!r}; choose 'all' (every input) or "
        "'own' (the clean faces and the recogniser's own completion)"
    )
  return inputs, categories, conditions


def _real_face_alignment(e: ConfigDict, models: Any) -> dict[str, Any]:
  """LFW / AR get the training faces' preprocessing (paper Sec. 4.1): aligned by
  5 landmarks (their files, else the detector) onto the mean training landmarks."""
  from deocc_jax.data import real_datasets as rd

  align = bool(e.align_real_faces)
  return dict(
      align_to=models.mean_landmarks if align else None,
      detector=rd.make_detector(str(e.landmark_detector)) if align else None,
  )


def verification_sets(
    config: ConfigDict,
    models: Any,
    held_src: Any,
    held: dict[str, Any] | None,
    conditions: tuple[str, ...],
    real_kw: dict[str, Any],
    results: dict[str, Any],
) -> list[Any]:
  """The held-out identities' pairs (read and occluded batch by batch) and LFW's
  (when ``evaluate.lfw_root`` is set); LFW's undetected faces go to ``results``."""
  from deocc_jax.data import real_datasets as rd

  e, mask_cfg = config.evaluate, factories.mask_config(config)
  sets = []
  if held_src is not None:
    vs = streaming.verification_set(
        held_src,
        int(e.num_pairs),
        int(e.seed),
        mask_cfg,
        conditions,
        int(e.max_records) or None,
        name=str(config.data.source),
    )
    vs.identities = held["description"]
    sets.append(vs)
  if str(e.lfw_root):
    lfw = rd.LFW(
        str(e.lfw_root),
        str(require(config, "evaluate.lfw_pairs")),
        resolution=models.resolution,
        landmarks_file=str(e.lfw_landmarks) or None,
        **real_kw,
    )
    vs = streaming.lfw_verification_set(lfw, int(e.seed), mask_cfg, conditions)
    vs.identities = _external_identities("LFW", models.teacher.name, len(lfw.undetected))
    results["undetected"] = {"lfw": len(lfw.undetected)}
    sets.append(vs)
  return sets


def identification_sets(
    config: ConfigDict,
    workdir: str,
    models: Any,
    held_src: Any,
    held: dict[str, Any] | None,
    real_kw: dict[str, Any],
    results: dict[str, Any],
) -> list[Any]:
  """The held-out identities' gallery / probes and AR's (when ``evaluate.ar_root``
  is set; without the images the AR-distilled student trained on)."""
  e = config.evaluate
  id_sets = []
  if bool(e.identification) and held_src is not None:
    ids = streaming.identification_set(
        held_src,
        int(e.seed),
        int(e.gallery_per_identity),
        int(e.max_records) or None,
        int(e.probes_per_identity) or None,
        name=str(config.data.source),
    )
    ids.identities = held["description"]
    id_sets.append(ids)
  if str(e.ar_root):
    ar_pass = _ar_pass(workdir, models)
    ids = streaming.ar_identification_set(
        str(e.ar_root),
        models.resolution,
        str(e.ar_landmarks) or None,
        **real_kw,
        exclude=ar_pass.get("train_images", ()),
    )
    ids.identities = _external_identities("AR", models.teacher.name, ids.undetected)
    if ar_pass:
      ids.distilled_on_set = "student_ar"
      ids.identities += (
          f"; probes: AR images {_ranges(ar_pass['probe_images'])} of each subject, never "
          f"trained on; the student distilled on AR trained on images "
          f"{_ranges(ar_pass['train_images'])}, its teacher shown images "
          f"{_ranges(ar_pass['teacher_images'])}; the other students' rows are zero-shot"
      )
    results.setdefault("undetected", {})["ar"] = ids.undetected
    id_sets.append(ids)
  return id_sets


# --------------------------------------------------------------------- run


def run(
    config: ConfigDict, workdir: str, checkpoint: str | None = None, results_dir: str | None = None
) -> dict[str, Any]:
  """Evaluates the run in ``workdir``; returns the results dict (all hosts).
  ``checkpoint``: one choice for every stage, else config.evaluate.checkpoints."""
  e = require(config, "evaluate")
  t_start = time.perf_counter()
  checkpoints = checkpoint or config_checkpoints(config)  # --checkpoint: every stage's
  held_src = held = None
  if bool(e.held_out):  # refuse trained-on identities before any restore
    held_src, held = held_out_source(config)
  models = restore_models(config, workdir, checkpoints, tuple(e.recognizers) or None)
  if jax.process_index() == 0:  # also recorded in results.json (checkpoint_steps)
    print(
        "restored checkpoints: "
        + ", ".join(f"{k} step {v}" for k, v in sorted(models.steps.items())),
        flush=True,
    )
  inputs, categories, conditions = _check_inputs(config)
  mesh, only_own = factories.make_mesh(config), str(e.retrained_inputs) == "own"
  ev = Evaluator(models, mesh, int(e.batch_size), int(e.diffusion_iters), only_own)
  out_dir = results_dir or os.path.join(workdir, "results")
  plots = bool(e.plots)
  write = jax.process_index() == 0
  if write:
    epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
  results: dict[str, Any] = {
      "checkpoint_steps": models.steps,
      "teacher": models.teacher.name,
      "verification": {},
      "identification": {},
  }
  if held is not None:
    results["held_out"] = held
  real_kw = _real_face_alignment(e, models)
  sets = verification_sets(config, models, held_src, held, conditions, real_kw, results)
  grid_rows = 8 if plots and models.complete is not None else 0
  for vs in sets:
    ev.stream_verification(vs, inputs, grid_rows)  # one pass over the faces (every host)
    res = verification_eval.results(ev, vs, inputs, categories)
    results["verification"][vs.name] = {
        "num_pairs": vs.num_pairs,
        "num_faces": len(vs.labels),
        "results": res["results"],
        "paired": res["paired"],
    }
    if vs.name == sets[0].name:
      results["calibration"] = {
          "set": vs.name,
          "condition": "mixture, one face masked",
          "thresholds": res["thresholds"],
      }
    if models.segment is not None:
      results.setdefault("segmentation_iou", {})[vs.name] = segmentation_eval.results(
          ev, vs.views, categories
      )
    if write:
      verification_tables.write(res, vs, models, out_dir, plots)
      mix = res["results"][protocols.MIXTURE]
      completion_methods.write(mix, vs.name, vs.identities, out_dir)
      if grid_rows:
        completion_grid.write(ev, vs, out_dir, grid_rows)
  for ids in identification_sets(config, workdir, models, held_src, held, real_kw, results):
    res = identification_eval.results(ev, ids, inputs)
    results["identification"][ids.name] = res
    if models.segment is not None and ids.name != "ar":
      results.setdefault("segmentation_iou", {})[f"{ids.name} AR"] = segmentation_eval.results(
          ev, ids.probes
      )
    if write:
      identification_eval.write(res, ids, models, out_dir, plots)
  results["timings_s"] = {**ev.timings, "total": time.perf_counter() - t_start}
  if write:
    _write_summaries(results, models, workdir, out_dir, plots)
  return results


def _write_summaries(
    results: dict[str, Any], models: Any, workdir: str, out_dir: str, plots: bool
) -> None:
  """segmentation_iou, training_losses.png, calibration.json, results.json."""
  if "segmentation_iou" in results:
    segmentation_eval.write(results["segmentation_iou"], out_dir)
  if plots:
    training_curves.write(workdir, out_dir)
  if "calibration" in results:
    report.write_json(
        {
            **results["calibration"],
            "resolution": models.resolution,
            "mean_landmarks": models.mean_landmarks.tolist(),
            "checkpoint_steps": models.steps,
            "recognizers": {r: models.display(r) for r in verification_recognizers(models)},
        },
        os.path.join(out_dir, "calibration.json"),
    )
  report.write_json(results, os.path.join(out_dir, "results.json"))
  _print_summary(out_dir)


def _print_summary(out_dir: str) -> None:
  for stem in (
      "table2_synthetic",
      "table2_celeba",
      "table2_lfw",
      "identification_synthetic",
      "identification_ar",
      "segmentation_iou",
  ):
    path = os.path.join(out_dir, stem + ".md")
    if epath.Path(path).exists():
      print(epath.Path(path).read_text())
  print(f"evaluation results in {out_dir}")
