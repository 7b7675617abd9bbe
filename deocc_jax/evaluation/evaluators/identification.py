"""The identification evaluator (the paper's Table 1 protocol, AR1 sunglasses /
AR2 scarf): each probe ranked against a clean gallery by cosine similarity of
embeddings (or by an identification-only row's own scores: SR's class
residuals); rank-1 table ``identification_<set>``, ``cmc_<set>`` (table, plot)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from deocc_jax.evaluation import identification, protocols, report
from deocc_jax.evaluation.evaluator import INPUTS, Evaluator
from deocc_jax.runs.models import Models


def results(
    ev: Evaluator, ids: protocols.IdentificationSet, inputs: tuple[str, ...]
) -> dict[str, Any]:
  """{recognizer: {probe subset: {input: {'rank1', 'cmc'}}}}: cosine similarity to
  the gallery's embeddings, or an identification-only row's own scores (SR: the
  class residuals of each probe coded over the gallery's features)."""
  ev.stream_identification(ids, inputs)  # every embedding below
  out: dict[str, Any] = {}
  for r in ev.models.recognizers:
    gallery = ev.embed(r, ids.gallery, (id(ids), "gallery"))
    identify = ev.models.identifiers.get(r)
    out[r] = {}
    for subset, view in ids.probes.items():
      out[r][subset] = {}
      for kind in inputs:
        if kind == "clean" or not ev.available(view, kind) or not ev.wanted(r, kind):
          continue
        probe, labels = ev.embed_view(r, view, kind), ids.probe_labels[subset]
        if identify is None:
          cmc = identification.cmc_curve(gallery, ids.gallery_labels, probe, labels)
        else:
          classes, scores = identify(gallery, ids.gallery_labels, probe)
          cmc = identification.cmc_from_scores(classes, scores, labels)
        out[r][subset][kind] = {"rank1": float(cmc[0]), "cmc": cmc.tolist()}
  return out


def _identification_name(models: Models, r: str, ids: protocols.IdentificationSet) -> str:
  """The row's name; where a student was distilled on the set's own subjects
  (AR's distillation pass), the other students are labelled zero-shot."""
  name = models.display(r)
  distilled = getattr(ids, "distilled_on_set", "")
  if distilled and r != distilled and r.startswith("student"):
    return f"{name}, zero-shot"
  return name


def write(
    res: dict[str, Any], ids: protocols.IdentificationSet, models: Models, out_dir: str, plots: bool
) -> None:
  name = ids.name
  cols, rows = [("recognizer", "recognizer")], []
  subsets = list(ids.probes)
  for subset in subsets:
    for kind in INPUTS:
      if any(kind in res[r][subset] for r in res):
        cols.append((f"{subset}|{kind}", f"{subset.split()[0]} {INPUTS[kind]}"))
  for r in res:
    row: dict[str, Any] = {"recognizer": _identification_name(models, r, ids)}
    for key, _ in cols[1:]:
      subset, kind = key.split("|")
      s = res[r][subset].get(kind)
      row[key] = 100 * s["rank1"] if s else None
    rows.append(row)
  n_probes = {s: len(v) for s, v in ids.probe_labels.items()}
  sr = [models.display(r) for r in res if r in models.identifiers]
  report.write_table(
      rows,
      cols,
      os.path.join(out_dir, f"identification_{name}"),
      title=(
          f"Rank-1 identification (%) on {name}: gallery {len(ids.gallery)} "
          f"clean faces of {len(np.unique(ids.gallery_labels))} identities; "
          f"probes {n_probes}. Identities: {ids.identities or 'unstated'}."
          + (
              f" {', '.join(sr)}: each probe coded over the gallery's features, identities "
              "ranked by class residual (smallest first); the others by cosine similarity."
              if sr
              else ""
          )
      ),
  )
  curves = {
      f"{models.display(r)}, {s.split()[0]}, {INPUTS[k]}": np.asarray(v["cmc"])
      for r in res
      for s in subsets
      for k, v in res[r][s].items()
      if k in ("masked", "completed_predicted", "completed")
  }
  report.write_text(
      f"CMC on {name} (rank-k identification, %). Identities: "
      f"{ids.identities or 'unstated'}.\n\n" + identification.format_cmc_table(curves) + "\n",
      os.path.join(out_dir, f"cmc_{name}.md"),
  )
  if plots:
    report.plot_cmc_curves(curves, os.path.join(out_dir, f"cmc_{name}.png"), title=f"CMC on {name}")
