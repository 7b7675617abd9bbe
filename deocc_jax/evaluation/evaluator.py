"""The evaluation's numbers: every input image and embedding of an evaluation set.

:class:`Evaluator` computes, once per evaluation set and sharded over all
devices and hosts, the input images (masked; completed by G with the true or
the segmenter's predicted mask; mean-face and diffusion fills) and every
recogniser's embeddings of them; the ``*_results`` functions turn them into
the verification (10 folds, per-fold paired differences), identification and
segmentation results that :mod:`deocc_jax.evaluation.tables` writes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from deocc_jax.data import masks as masks_lib
from deocc_jax.evaluation import classical_fill, identification, protocols, verification
from deocc_jax.evaluation.models import Models

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

  def map(self, fn: Callable[[jax.Array], jax.Array], images: np.ndarray, what: str) -> np.ndarray:
    from deocc_jax.teachers import extract

    t0 = time.perf_counter()
    out, _ = extract.extract_embeddings(fn, _Arrays(images), self.batch_size, self.mesh)
    self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - t0
    return out

  def predicted_mask(self, view: protocols.OccludedView) -> np.ndarray:
    if self.models.segment is None:
      raise ValueError(
          "no occlusion segmenter in this run (stage 'segmentation'): needed "
          "for blind de-occlusion of faces without a known mask"
      )
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
      self._embeddings[key] = self.map(
          self.models.recognizers[recognizer], images, f"embed/{recognizer}"
      )
    return self._embeddings[key]

  def embed_view(self, recognizer: str, view: protocols.OccludedView, kind: str) -> np.ndarray:
    return self.embed(recognizer, self.images(view, kind), (id(view), kind))


# ------------------------------------------------------------ verification


def verification_results(
    ev: Evaluator,
    vs: protocols.VerificationSet,
    inputs: tuple[str, ...],
    categories: tuple[str, ...] = (),
) -> dict[str, Any]:
  """{condition: {recognizer: {input: {'one': summary, 'both': summary}}}} plus ROC data
  and the paired comparisons on the mixture (:func:`paired_comparisons`, per side).

  Conditions: every view of ``vs`` (the mixture, and a category occluding
  every face when the set has that view), then each of ``categories``
  without a view of its own, from the mixture's scores: the pairs whose
  second face's occluder is of that category (both faces masked: the first
  face's occluder is of any category)."""
  a, b, same, fold = vs.pairs
  out: dict[str, Any] = {}
  roc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  thresholds: dict[str, dict[str, float]] = {}
  grouped = [c for c in categories if c not in vs.views]
  mix_view = vs.views[protocols.MIXTURE]
  if grouped and mix_view.category is None:
    raise ValueError(f"{vs.name}: the mixture has no occluder categories to group pairs by")
  # pair selections of the grouped categories (a category needs same- and
  # different-identity pairs to be scored; a small set may lack them)
  groups = {c: mix_view.category[b] == masks_lib.CATEGORIES.index(c) for c in grouped}
  groups = {c: sel for c, sel in groups.items() if same[sel].any() and (~same[sel]).any()}

  def evaluate(
      one: np.ndarray, both: np.ndarray, sel: Any = slice(None)
  ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """(summaries, ROC of 'one') of the pairs ``sel``."""
    res_one = verification.evaluate_pairs(one[sel], same[sel], fold[sel])
    res_both = verification.evaluate_pairs(both[sel], same[sel], fold[sel])
    summary = {
        "one": res_one.summary(),
        "both": res_both.summary(),
        "fold_accuracies_one": res_one.fold_accuracies,
        "fold_accuracies_both": res_both.fold_accuracies,
    }
    return summary, (res_one.roc_far, res_one.roc_tar)

  for cond, view in vs.views.items():
    kinds = (
        inputs if cond == protocols.MIXTURE else tuple(k for k in CATEGORY_INPUTS if k in inputs)
    )
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
        out[cond][r][kind], roc_curve = evaluate(one, both)
        if cond != protocols.MIXTURE:
          continue
        thresholds.setdefault(r, {})[kind] = verification.best_threshold(one, same)[0]
        if kind in ("clean", "masked", "completed", "completed_predicted"):
          roc[f"{ev.models.display(r)}, {INPUTS[kind]}"] = roc_curve
        if kind in CATEGORY_INPUTS:
          for c, sel in groups.items():
            g, _ = evaluate(one, both, sel)
            out.setdefault(c, {}).setdefault(r, {})[kind] = {**g, "num_pairs": int(sel.sum())}
  # the grouped categories after the views, in the order asked for
  out.update({c: out.pop(c) for c in grouped if c in out})
  mix = out.get(protocols.MIXTURE, {})
  paired = {side: paired_comparisons(mix, side) for side in ("one", "both")}
  return {"results": out, "roc": roc, "thresholds": thresholds, "paired": paired}


REFERENCES = ("arcface_finetuned", "teacher")  # what the paired table compares against


def paired_comparisons(mix: dict[str, dict[str, Any]], side: str = "one") -> list[dict[str, Any]]:
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
    rows.append(
        {
            "a": (ra, ka),
            "b": (rb, kb),
            "mean": 100 * d["mean"],
            "std": 100 * d["std"],
            "positive": d["positive"],
            "folds": d["folds"],
        }
    )

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


# ---------------------------------------------------------- identification


def identification_results(
    ev: Evaluator, ids: protocols.IdentificationSet, inputs: tuple[str, ...]
) -> dict[str, Any]:
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
        cmc = identification.cmc_curve(gallery, ids.gallery_labels, probe, ids.probe_labels[subset])
        out[r][subset][kind] = {"rank1": float(cmc[0]), "cmc": cmc.tolist()}
  return out


# ------------------------------------------------------------ segmentation


def segmentation_results(
    ev: Evaluator, views: dict[str, protocols.OccludedView], categories: tuple[str, ...] = ()
) -> dict[str, float]:
  """IoU of predicted and true masks over all pixels of each occlusion
  condition; each of ``categories`` without a view of its own: over the
  mixture's faces whose occluder is of that category."""
  from deocc_jax.training.segmentation_stage import iou_per_category

  per = {
      name: iou_per_category(ev.predicted_mask(v), v.mask, v.category)
      for name, v in views.items()
      if v.mask is not None
  }
  out = {name: p["mixed"] for name, p in per.items()}
  mix = per.get(protocols.MIXTURE, {})
  out.update({c: mix[c] for c in categories if c not in views and c in mix})
  return out
