"""The evaluation job: the paper's tables from a run's checkpoints.

``run(config, workdir)`` (stage ``evaluate`` of the main job, and
``python -m deocc_jax.evaluate``) restores every model of the run
(:mod:`deocc_jax.evaluation.models`), builds the seeded evaluation sets
(:mod:`deocc_jax.evaluation.protocols`), computes every input image --
masked, completed by G with the true or the segmenter's predicted mask,
mean-face fill, diffusion fill -- and every embedding sharded over all
devices and hosts, and writes under ``<results_dir>`` (default
``<workdir>/results``; a local path or any ``etils.epath`` URI such as
``gs://...``). The training source's evaluation split must share no
identity with the split the models trained on (:func:`held_out_source`
refuses otherwise); LFW / AR faces are aligned by 5 landmarks onto the mean
training landmarks (paper Sec. 4.1). Every table's title says whose
identities it uses.

    verification_<set>.md/.csv          recogniser x input, mixture of categories
                                        (Fig. 4 / Table 2 shape; one / both faces masked,
                                        10-fold accuracy, AUC, EER, TAR@FAR 1e-3 / 1e-4)
    table2_<set>.md/.csv                recogniser x completion method (accuracy, one masked)
    by_category_<set>_{one,both}.md/.csv  accuracy per mask category
    identification_<set>.md/.csv        rank-1 on AR1 (sunglasses) / AR2 (scarf) per input
                                        (Table 1 shape) and cmc_<set>.md
    segmentation_iou.md/.csv            occlusion segmenter IoU per category
    roc_<set>.png, cmc_<set>.png, accuracy_<set>.png, completions_<set>.png,
    training_losses.png                 plots
    calibration.json                    thresholds per recogniser / input (for inference)
    results.json                        everything above as numbers
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from ml_collections import ConfigDict

from deocc_jax.data import masks as masks_lib
from deocc_jax.evaluation import classical_fill, identification, protocols, report, verification
from deocc_jax.evaluation.models import Models, restore_models
from deocc_jax.training import stages

# input key -> display name. 'completed' uses the true mask, 'completed_predicted'
# the occlusion segmenter's (blind de-occlusion); fills use the true mask when known.
INPUTS = {
    "clean": "clean",
    "masked": "masked",
    "mean_fill": "mean-face fill",
    "diffusion_fill": "diffusion fill",
    "completed_predicted": "G, predicted mask",
    "completed": "G, true mask",
    # Table 2's "GA w/o attention": G trained without contextual attention
    # (stage 'deocclusion_noca'); only when that stage ran.
    "completed_noca": "G without CA, true mask",
}
CATEGORY_INPUTS = ("masked", "completed_predicted", "completed")


class _Arrays:
  """An indexable source over in-memory arrays for the sharded extractor."""

  def __init__(self, images: np.ndarray):
    self.images = images

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {"image": self.images[i], "identity": np.int32(0)}

  def __repr__(self) -> str:
    return f"_Arrays({self.images.shape})"


class Evaluator:
  """Input images and embeddings on demand, cached, sharded over the mesh."""

  def __init__(self, models: Models, mesh, batch_size: int, diffusion_iters: int):
    self.models = models
    self.mesh = mesh
    n_dev = jax.process_count() * len(mesh.local_devices)
    self.batch_size = max(n_dev, -(-int(batch_size) // n_dev) * n_dev)
    self.diffusion_iters = int(diffusion_iters)
    self._images: dict[tuple[int, str], np.ndarray] = {}
    self._embeddings: dict[tuple[int, str, str], np.ndarray] = {}
    self._pred_mask: dict[int, np.ndarray] = {}
    self.timings: dict[str, float] = {}
    # (masked ++ mask) 4-channel batch -> filled faces; one function object per
    # kind so the sharded extractor compiles each once.
    mean = jnp.asarray(models.mean_face)
    iters = self.diffusion_iters
    self._fills: dict[str, Callable[[jax.Array], jax.Array]] = {
        "mean_fill": lambda z: classical_fill.mean_face_fill(z[..., :3], z[..., 3:], mean),
        "diffusion_fill": lambda z: classical_fill.diffusion_fill(z[..., :3], z[..., 3:], iters),
    }
    if models.complete is not None:
      complete = models.complete
      self._fills["completed"] = lambda z: complete(z[..., :3], z[..., 3:])
      self._fills["completed_predicted"] = self._fills["completed"]
    if models.complete_noca is not None:
      complete_noca = models.complete_noca
      self._fills["completed_noca"] = lambda z: complete_noca(z[..., :3], z[..., 3:])

  def map(self, fn: Callable[[jax.Array], jax.Array], images: np.ndarray, what: str
           ) -> np.ndarray:
    from deocc_jax.teachers import extract
    t0 = time.perf_counter()
    out, _ = extract.extract_embeddings(fn, _Arrays(images), self.batch_size, self.mesh)
    self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - t0
    return out

  def predicted_mask(self, view: protocols.OccludedView) -> np.ndarray:
    if self.models.segment is None:
      raise ValueError("no occlusion segmenter in this run (stage 'segmentation'): needed "
                       "for blind de-occlusion of faces without a known mask")
    if id(view) not in self._pred_mask:
      self._pred_mask[id(view)] = self.map(self.models.segment, view.masked, "segment")
    return self._pred_mask[id(view)]

  def available(self, view: protocols.OccludedView, kind: str) -> bool:
    """Whether ``kind`` can be computed for ``view`` with the models at hand."""
    if kind in ("clean", "masked"):
      return True
    if (kind == "completed_predicted" or view.mask is None) and self.models.segment is None:
      return False  # needs the segmenter's mask
    if kind in ("completed", "completed_predicted") and self.models.complete is None:
      return False
    if kind == "completed_noca" and self.models.complete_noca is None:
      return False
    return not (kind in ("completed", "completed_noca") and view.mask is None)

  def images(self, view: protocols.OccludedView, kind: str) -> np.ndarray:
    key = (id(view), kind)
    if key in self._images:
      return self._images[key]
    if kind == "masked":
      return view.masked
    mask = view.mask
    if kind == "completed_predicted" or mask is None:
      mask = self.predicted_mask(view)
    both = np.concatenate([view.masked, mask.astype(np.float32)], axis=-1)
    if kind not in self._fills:
      raise ValueError(f"unknown input {kind!r}; choose from {list(INPUTS)}")
    out = self.map(self._fills[kind], both, kind)
    self._images[key] = out
    return out

  def embed(self, recognizer: str, images: np.ndarray, tag: tuple[int, str]) -> np.ndarray:
    key = (*tag, recognizer)
    if key not in self._embeddings:
      self._embeddings[key] = self.map(self.models.recognizers[recognizer], images,
                                        f"embed/{recognizer}")
    return self._embeddings[key]

  def embed_view(self, recognizer: str, view: protocols.OccludedView, kind: str) -> np.ndarray:
    return self.embed(recognizer, self.images(view, kind), (id(view), kind))


# ------------------------------------------------------------ verification

def verification_results(ev: Evaluator, vs: protocols.VerificationSet,
                         inputs: tuple[str, ...]) -> dict[str, Any]:
  """{condition: {recognizer: {input: {'one': summary, 'both': summary}}}} plus ROC data
  and the paired comparisons on the mixture (:func:`paired_comparisons`, per side)."""
  a, b, same, fold = vs.pairs
  out: dict[str, Any] = {}
  roc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  thresholds: dict[str, dict[str, float]] = {}
  for cond, view in vs.views.items():
    kinds = inputs if cond == protocols.MIXTURE else tuple(k for k in CATEGORY_INPUTS
                                                           if k in inputs)
    out[cond] = {}
    for r in ev.models.recognizers:
      clean = ev.embed(r, vs.clean, (id(vs), "clean"))
      out[cond][r] = {}
      for kind in kinds:
        if kind == "clean":
          one = both = verification.cosine_scores(clean[a], clean[b])
        elif not ev.available(view, kind):
          continue
        else:
          probe = ev.embed_view(r, view, kind)
          one = verification.cosine_scores(clean[a], probe[b])
          both = verification.cosine_scores(probe[a], probe[b])
        res_one = verification.evaluate_pairs(one, same, fold)
        res_both = verification.evaluate_pairs(both, same, fold)
        out[cond][r][kind] = {"one": res_one.summary(), "both": res_both.summary(),
                              "fold_accuracies_one": res_one.fold_accuracies,
                              "fold_accuracies_both": res_both.fold_accuracies}
        if cond == protocols.MIXTURE:
          thresholds.setdefault(r, {})[kind] = verification.best_threshold(one, same)[0]
          if kind in ("clean", "masked", "completed", "completed_predicted"):
            roc[f"{ev.models.display(r)}, {INPUTS[kind]}"] = (res_one.roc_far, res_one.roc_tar)
  mix = out.get(protocols.MIXTURE, {})
  paired = {side: paired_comparisons(mix, side) for side in ("one", "both")}
  return {"results": out, "roc": roc, "thresholds": thresholds, "paired": paired}


REFERENCES = ("arcface_finetuned", "teacher")  # what the paired table compares against


def paired_comparisons(mix: dict[str, dict[str, Any]], side: str = "one"
                       ) -> list[dict[str, Any]]:
  """Per-fold paired differences (points) on the mixture: every recogniser
  minus each reference recogniser (the fine-tuned baseline, the teacher) on
  the same input, and every completed / filled input minus 'masked' for the
  same recogniser; ``side`` 'one' or 'both' faces masked."""
  key = f"fold_accuracies_{side}"
  rows = []

  def add(ra: str, ka: str, rb: str, kb: str) -> None:
    a, b = mix.get(ra, {}).get(ka), mix.get(rb, {}).get(kb)
    if a is None or b is None or key not in a or key not in b:
      return
    d = verification.paired_difference(a[key], b[key])
    rows.append({"a": (ra, ka), "b": (rb, kb), "mean": 100 * d["mean"], "std": 100 * d["std"],
                 "positive": d["positive"], "folds": d["folds"]})

  for ref in REFERENCES:
    for r in mix:
      if r == ref:
        continue
      for kind in INPUTS:
        add(r, kind, ref, kind)
  for r in mix:
    for kind in INPUTS:
      if kind not in ("clean", "masked"):
        add(r, kind, r, "masked")
  return rows


def _pm(s: dict[str, float]) -> tuple[float, float]:
  return 100 * s["accuracy"], 100 * s["accuracy_std"]


def write_verification(res: dict[str, Any], vs: protocols.VerificationSet, models: Models,
                       out_dir: str, plots: bool) -> None:
  name = vs.name
  mix = res["results"][protocols.MIXTURE]
  rows = []
  for r, per in mix.items():
    for kind, s in per.items():
      o, b = s["one"], s["both"]
      rows.append({"recognizer": models.display(r), "input": INPUTS[kind],
                   "one": _pm(o), "both": _pm(b), "auc": o["auc"], "eer": o["eer"],
                   "tar3": o["tar@far=0.001"], "tar4": o["tar@far=0.0001"]})
  head = (f"Verification on {name}: {len(vs.clean)} faces, {vs.num_pairs} pairs in 10 folds; "
          "occluders from every category (mixture), on the second face of each pair (one) or "
          "on both; accuracy = mean ± std over folds at the threshold chosen on the other 9. "
          f"AUC / EER / TAR@FAR with one face masked. Identities: {vs.identities or 'unstated'}.")
  report.write_table(rows, [("recognizer", "recognizer"), ("input", "input"),
                            ("one", "acc. % (one masked)"), ("both", "acc. % (both masked)"),
                            ("auc", "AUC"), ("eer", "EER"), ("tar3", "TAR@FAR=1e-3"),
                            ("tar4", "TAR@FAR=1e-4")],
                     os.path.join(out_dir, f"verification_{name}"), title=head,
                     float_format="{:.4f}")
  # Table 2 / Fig. 4 shape: recogniser x completion method.
  kinds = [k for k in INPUTS if any(k in per for per in mix.values())]
  t2 = [{"recognizer": models.display(r), **{k: _pm(per[k]["one"]) if k in per else None
                                             for k in kinds}} for r, per in mix.items()]
  report.write_table(t2, [("recognizer", "recognizer")] + [(k, INPUTS[k]) for k in kinds],
                     os.path.join(out_dir, f"table2_{name}"),
                     title=f"Accuracy (%) on {name} by input (one face masked; mixture). "
                           f"Identities: {vs.identities or 'unstated'}.")
  # Every comparison as a per-fold paired difference (same pairs, same folds).
  for side in ("one", "both"):
    prow = [{"a": f"{models.display(c['a'][0])}, {INPUTS[c['a'][1]]}",
             "b": f"{models.display(c['b'][0])}, {INPUTS[c['b'][1]]}",
             "diff": (c["mean"], c["std"]), "positive": f"{c['positive']} / {c['folds']}"}
            for c in res["paired"][side]]
    report.write_table(prow, [("a", "A"), ("b", "B"), ("diff", "A - B (points, mean ± std over folds)"),
                              ("positive", "folds A > B")],
                       os.path.join(out_dir, f"paired_{name}_{side}"),
                       title=f"Per-fold paired differences of verification accuracy on {name}, "
                             f"{side} face(s) masked (mixture; same pairs and folds for A and B). "
                             f"Identities: {vs.identities or 'unstated'}.")
  # TAR@FAR=1e-3 in Table 2's shape (next to its accuracies).
  t2t = [{"recognizer": models.display(r), **{k: 100 * per[k]["one"]["tar@far=0.001"]
                                              if k in per else None for k in kinds}}
         for r, per in mix.items()]
  report.write_table(t2t, [("recognizer", "recognizer")] + [(k, INPUTS[k]) for k in kinds],
                     os.path.join(out_dir, f"tar_{name}"),
                     title=f"TAR (%) at FAR=1e-3 on {name} by input (one face masked; mixture). "
                           f"Identities: {vs.identities or 'unstated'}.")
  for side in ("one", "both"):
    cat_rows = []
    for r in models.recognizers:
      for kind in CATEGORY_INPUTS:
        row = {"recognizer": models.display(r), "input": INPUTS[kind]}
        for cond in res["results"]:
          s = res["results"][cond].get(r, {}).get(kind)
          row[cond] = _pm(s[side]) if s else None
        if any(v is not None for k, v in row.items() if k not in ("recognizer", "input")):
          cat_rows.append(row)
    conds = list(res["results"])
    report.write_table(cat_rows, [("recognizer", "recognizer"), ("input", "input")]
                       + [(c, c) for c in conds],
                       os.path.join(out_dir, f"by_category_{name}_{side}"),
                       title=f"Accuracy (%) on {name} per mask category, {side} face(s) masked. "
                             f"Identities: {vs.identities or 'unstated'}.")
  if plots:
    report.plot_roc_curves(res["roc"], os.path.join(out_dir, f"roc_{name}.png"),
                           title=f"ROC on {name} (one face masked, mixture)")
    report.plot_grouped_bars(
        {models.display(r): {INPUTS[k]: per[k]["one"]["accuracy"] * 100 for k in kinds
                             if k in per} for r, per in mix.items()},
        os.path.join(out_dir, f"accuracy_{name}.png"),
        title=f"Verification accuracy on {name} (one face masked)", ylabel="accuracy (%)")


# ---------------------------------------------------------- identification

def identification_results(ev: Evaluator, ids: protocols.IdentificationSet,
                           inputs: tuple[str, ...]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for r in ev.models.recognizers:
    gallery = ev.embed(r, ids.gallery, (id(ids), "gallery"))
    out[r] = {}
    for subset, view in ids.probes.items():
      out[r][subset] = {}
      for kind in inputs:
        if kind == "clean" or not ev.available(view, kind):
          continue
        probe = ev.embed_view(r, view, kind)
        cmc = identification.cmc_curve(gallery, ids.gallery_labels, probe,
                                       ids.probe_labels[subset])
        out[r][subset][kind] = {"rank1": float(cmc[0]), "cmc": cmc.tolist()}
  return out


def write_identification(res: dict[str, Any], ids: protocols.IdentificationSet,
                         models: Models, out_dir: str, plots: bool) -> None:
  name = ids.name
  cols, rows = [("recognizer", "recognizer")], []
  subsets = list(ids.probes)
  for subset in subsets:
    for kind in INPUTS:
      if any(kind in res[r][subset] for r in res):
        cols.append((f"{subset}|{kind}", f"{subset.split()[0]} {INPUTS[kind]}"))
  for r in res:
    row: dict[str, Any] = {"recognizer": models.display(r)}
    for key, _ in cols[1:]:
      subset, kind = key.split("|")
      s = res[r][subset].get(kind)
      row[key] = 100 * s["rank1"] if s else None
    rows.append(row)
  n_probes = {s: len(v) for s, v in ids.probe_labels.items()}
  report.write_table(rows, cols, os.path.join(out_dir, f"identification_{name}"),
                     title=(f"Rank-1 identification (%) on {name}: gallery {len(ids.gallery)} "
                            f"clean faces of {len(np.unique(ids.gallery_labels))} identities; "
                            f"probes {n_probes}. Identities: {ids.identities or 'unstated'}."))
  curves = {f"{models.display(r)}, {s.split()[0]}, {INPUTS[k]}": np.asarray(v["cmc"])
            for r in res for s in subsets for k, v in res[r][s].items()
            if k in ("masked", "completed_predicted", "completed")}
  report.write_text(f"CMC on {name} (rank-k identification, %). Identities: "
                    f"{ids.identities or 'unstated'}.\n\n"
                    + identification.format_cmc_table(curves) + "\n",
                    os.path.join(out_dir, f"cmc_{name}.md"))
  if plots:
    report.plot_cmc_curves(curves, os.path.join(out_dir, f"cmc_{name}.png"),
                           title=f"CMC on {name}")


# ------------------------------------------------------------ segmentation

def segmentation_results(ev: Evaluator, views: dict[str, protocols.OccludedView]
                         ) -> dict[str, float]:
  """IoU of predicted and true masks over all pixels of each occlusion condition."""
  from deocc_jax.training.segmentation_stage import iou_per_category
  return {name: iou_per_category(ev.predicted_mask(v), v.mask, v.category)["mixed"]
          for name, v in views.items() if v.mask is not None}


def write_segmentation(res: dict[str, dict[str, float]], out_dir: str) -> None:
  rows = [{"set": s, "condition": c, "iou": v} for s, per in res.items() for c, v in per.items()]
  report.write_table(rows, [("set", "evaluation set"), ("condition", "occlusion condition"),
                            ("iou", "IoU")],
                     os.path.join(out_dir, "segmentation_iou"),
                     title="Occlusion segmenter (blind de-occlusion): IoU of the predicted "
                           "mask with the true mask, over all pixels of each condition",
                     float_format="{:.3f}")


# ------------------------------------------------------------------- plots

def write_completion_grid(ev: Evaluator, vs: protocols.VerificationSet, out_dir: str,
                          n: int = 8) -> None:
  view = vs.views[protocols.MIXTURE]
  cols: dict[str, np.ndarray] = {"clean": vs.clean[:n], "masked": view.masked[:n],
                                 "mask": view.mask[:n]}
  if ev.models.segment is not None:
    cols["predicted mask"] = ev.predicted_mask(view)[:n]
  for kind in ("mean_fill", "diffusion_fill", "completed_predicted", "completed",
               "completed_noca"):
    if ev.available(view, kind):
      cols[INPUTS[kind]] = ev.images(view, kind)[:n]
  scale = max(1, 96 // vs.clean.shape[1])  # nearest-neighbour zoom: small faces stay visible
  cols = {k: np.repeat(np.repeat(v, scale, axis=1), scale, axis=2) for k, v in cols.items()}
  report.write_completion_grid(cols, os.path.join(out_dir, f"completions_{vs.name}.png"),
                               max_rows=n)


def write_training_curves(workdir: str, out_dir: str) -> None:
  series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
  wanted = {"teacher": ["loss/arcface"], "deocclusion": ["loss/reconstruction", "loss/d_global"],
            "distill_hard": ["loss/total"], "distill_soft": ["loss/total"],
            "finetune_arcface": ["loss/arcface"], "segmentation": ["loss/bce"]}
  for stage, keys in wanted.items():
    path = os.path.join(workdir, stage, "logs", "metrics.jsonl")
    if not epath.Path(path).exists():
      continue
    for k, v in report.read_metric_series(path, keys).items():
      series.setdefault(k, {})[stage] = v
  if series:
    report.plot_loss_curves(series, os.path.join(out_dir, "training_losses.png"),
                            title="Training losses per stage")


# ------------------------------------------------------- held-out identities

class HeldOutError(ValueError):
  """An evaluation set shares identities with the data the models trained on."""


def identity_keys(source: Any) -> set[str]:
  """The (global) identity names of a face source, as strings."""
  names = getattr(source, "identity_names", None)
  if names is None:
    names = getattr(source, "identities", None)  # synthetic: global identity ids
  if names is None:
    raise HeldOutError(f"{source!r} does not say which identities it holds "
                       "(identity_names / identities): cannot check it is held out")
  return {str(n) for n in np.asarray(names).ravel().tolist()}


def held_out_source(config: ConfigDict) -> tuple[Any, dict[str, Any]]:
  """The training source's ``config.evaluate.split``, checked to share no identity
  with the split every training stage reads ('train': teacher trained here,
  G, segmenter, students, fine-tuned baseline); raises :class:`HeldOutError`
  otherwise. Returns (source, {'split', 'identities', 'trained_identities',
  'shared', 'description'})."""
  split = str(stages.require(config, "evaluate.split"))
  kind = str(config.data.source)
  trained = identity_keys(stages.make_source(config, "train"))
  pool = 0
  if (str(config.teacher.kind) == "arcface"
      and int(config.data.get("teacher_identities", 0) or 0) > 0):  # the teacher's own pool
    pool_ids = identity_keys(stages.teacher_source(config))
    pool = len(pool_ids)
    trained |= pool_ids
  src = stages.make_source(config, split)
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
        "identity-disjoint.")
  how = ("excluded from every training stage by config.data.holdout_identities"
         if split == "heldout" else f"split {split!r}, disjoint from the training split")
  desc = (f"{len(held)} {kind} identities ({how}; 0 shared with the {len(trained)} training "
          "identities" + (f", {pool} of them the teacher's pool" if pool else "") + ")")
  return src, {"split": split, "identities": len(held), "trained_identities": len(trained),
               "shared": 0, "description": desc}


def _external_identities(name: str, teacher_name: str, undetected: int) -> str:
  aligned = ("" if not undetected else
             f"; {undetected} faces without landmarks placed by the default layout")
  return (f"the {name} identities (an external set, none in this run's training data; "
          f"the pretrained teacher's ({teacher_name}) own training set is not checked"
          f"{aligned})")


# --------------------------------------------------------------------- run

def run(config: ConfigDict, workdir: str, checkpoint: str | None = None,
        results_dir: str | None = None) -> dict[str, Any]:
  """Evaluates the run in ``workdir``; returns the results dict (all hosts)."""
  e = stages.require(config, "evaluate")
  t_start = time.perf_counter()
  checkpoint = str(checkpoint or e.get("checkpoint", "latest"))
  wanted = tuple(e.get("recognizers", ())) or None
  held_src = held = None
  if bool(e.get("held_out", True)):  # refuse trained-on identities before any restore
    held_src, held = held_out_source(config)
  models = restore_models(config, workdir, checkpoint, wanted)
  if jax.process_index() == 0:  # also recorded in results.json (checkpoint_steps)
    print("restored checkpoints: " + ", ".join(f"{k} step {v}" for k, v in
                                              sorted(models.steps.items())), flush=True)
  inputs = tuple(e.get("inputs", tuple(INPUTS)))
  bad = [k for k in inputs if k not in INPUTS]
  if bad:
    raise stages.ConfigError(f"config.evaluate.inputs has unknown input(s) {bad}; "
                             f"choose from {list(INPUTS)}")
  mesh = stages.make_mesh(config)
  ev = Evaluator(models, mesh, int(e.batch_size), int(e.get("diffusion_iters", 200)))
  out_dir = results_dir or os.path.join(workdir, "results")
  plots = bool(e.get("plots", True))
  write = jax.process_index() == 0
  if write:
    epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
  max_records = int(e.get("max_records", 0)) or None
  mask_cfg = stages.mask_config(config)
  conditions = (protocols.MIXTURE,) + tuple(e.get("categories", masks_lib.CATEGORIES))
  results: dict[str, Any] = {"checkpoint_steps": models.steps, "teacher": models.teacher.name,
                             "verification": {}, "identification": {}}
  sets = []
  if held_src is not None:  # the training source's held-out identities
    results["held_out"] = held
    vs = protocols.synthetic_verification_set(
        held_src, int(e.num_pairs), int(e.seed), mask_cfg, conditions, max_records,
        name=str(config.data.source))
    vs.identities = held["description"]
    sets.append(vs)
  # LFW / AR get the training faces' preprocessing (paper Sec. 4.1): aligned by
  # 5 landmarks (their files, else the detector) onto the mean training landmarks.
  from deocc_jax.data import real_datasets as rd
  align = bool(e.get("align_real_faces", True))
  real_kw = dict(align_to=models.mean_landmarks if align else None,
                 detector=rd.make_detector(str(e.get("landmark_detector", ""))) if align
                 else None)
  if str(e.get("lfw_root", "")):
    lfw = rd.LFW(str(e.lfw_root), str(stages.require(config, "evaluate.lfw_pairs")),
                 resolution=models.resolution, landmarks_file=str(e.get("lfw_landmarks", ""))
                 or None, **real_kw)
    vs = protocols.lfw_verification_set(lfw, int(e.seed), mask_cfg, conditions)
    vs.identities = _external_identities("LFW", models.teacher.name, len(lfw.undetected))
    results["undetected"] = {"lfw": len(lfw.undetected)}
    sets.append(vs)
  for vs in sets:
    res = verification_results(ev, vs, inputs)
    results["verification"][vs.name] = {
        "num_pairs": vs.num_pairs, "num_faces": len(vs.clean), "results": res["results"],
        "paired": res["paired"]}
    if vs.name == sets[0].name:
      results["calibration"] = {"set": vs.name, "condition": "mixture, one face masked",
                                "thresholds": res["thresholds"]}
    if models.segment is not None:
      results.setdefault("segmentation_iou", {})[vs.name] = segmentation_results(ev, vs.views)
    if write:
      write_verification(res, vs, models, out_dir, plots)
      if plots and models.complete is not None:
        write_completion_grid(ev, vs, out_dir)
  id_sets = []
  if bool(e.get("identification", True)) and bool(e.get("held_out", True)):
    ids = protocols.synthetic_identification_set(
        held_src, int(e.seed),
        int(e.get("gallery_per_identity", 1)), max_records,
        int(e.get("probes_per_identity", 0)) or None, name=str(config.data.source))
    ids.identities = results["held_out"]["description"]
    id_sets.append(ids)
  if str(e.get("ar_root", "")):
    ids = protocols.ar_identification_set(
        str(e.ar_root), models.resolution, str(e.get("ar_landmarks", "")) or None, **real_kw)
    ids.identities = _external_identities("AR", models.teacher.name, ids.undetected)
    results.setdefault("undetected", {})["ar"] = ids.undetected
    id_sets.append(ids)
  for ids in id_sets:
    res = identification_results(ev, ids, inputs)
    results["identification"][ids.name] = res
    if models.segment is not None and ids.name != "ar":
      results.setdefault("segmentation_iou", {})[f"{ids.name} AR"] = segmentation_results(
          ev, ids.probes)
    if write:
      write_identification(res, ids, models, out_dir, plots)
  results["timings_s"] = {**ev.timings, "total": time.perf_counter() - t_start}
  if write:
    if "segmentation_iou" in results:
      write_segmentation(results["segmentation_iou"], out_dir)
    if plots:
      write_training_curves(workdir, out_dir)
    if "calibration" in results:
      report.write_json({**results["calibration"], "resolution": models.resolution,
                         "mean_landmarks": models.mean_landmarks.tolist(),
                         "checkpoint_steps": models.steps,
                         "recognizers": {r: models.display(r) for r in models.recognizers}},
                        os.path.join(out_dir, "calibration.json"))
    report.write_json(results, os.path.join(out_dir, "results.json"))
    _print_summary(out_dir)
  return results


def _print_summary(out_dir: str) -> None:
  for stem in ("table2_synthetic", "table2_celeba", "table2_lfw", "identification_synthetic",
               "identification_ar", "segmentation_iou"):
    path = os.path.join(out_dir, stem + ".md")
    if epath.Path(path).exists():
      print(epath.Path(path).read_text())
  print(f"evaluation results in {out_dir}")
