"""The evaluation's numbers: every embedding of an evaluation set, batch by batch.

:class:`Evaluator` makes, in one pass over a set's faces sharded over all
devices and hosts, every input of a batch (masked; completed by G with the
true or the segmenter's predicted mask; by G without contextual attention, GFC
and IDGAN; mean-face, diffusion, RPCA and GL fills) and
every recogniser's embeddings of them, and keeps only the embeddings (so the
host memory does not grow with the number of faces or of inputs); the
evaluators of :mod:`deocc_jax.evaluation.evaluators` (verification,
identification, segmentation IoU, completion grid, Table 2's completion
methods) turn them into results and write their tables.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from deocc_jax.evaluation import classical_fill, protocols, streaming
from deocc_jax.runs import kinds as run_kinds
from deocc_jax.runs import library_fill
from deocc_jax.runs.models import Models
from deocc_jax.utils import batch_map

# input key -> display name. 'completed' uses the true mask, 'completed_predicted'
# the occlusion segmenter's (blind de-occlusion); fills use the true mask when known.
INPUTS = {
    "clean": "clean",
    "masked": "masked",
    "mean_fill": "mean-face fill",
    "diffusion_fill": "diffusion fill",
    **library_fill.KEYS,  # Table 1's RPCA / GL fills: when config.evaluate.inputs names them
    "completed_predicted": "G, predicted mask",
    "completed": "G, true mask",
    # Table 2's "GA w/o attention": G trained without contextual attention
    # (stage 'deocclusion_noca'); only when that stage ran.
    "completed_noca": "G without CA, true mask",
    # Table 2's other completion methods (stages 'deocclusion_gfc' / '_idgan'),
    # and Table 1's GFC column: true mask where known, like the fills.
    "completed_gfc": "GFC fill",
    "completed_idgan": "IDGAN fill",
}


CATEGORY_INPUTS = ("masked", "completed_predicted", "completed")


# input key -> the de-occlusion stage whose network completes it (runs/kinds.COMPLETIONS)
COMPLETED_BY = {
    "completed": "deocclusion",
    "completed_predicted": "deocclusion",
    "completed_noca": "deocclusion_noca",
    "completed_gfc": "deocclusion_gfc",
    "completed_idgan": "deocclusion_idgan",
}
# the completions only made with a true mask (on a set without one, G's is
# 'completed_predicted'); the others take the segmenter's mask there
TRUE_MASK_ONLY = ("completed", "completed_noca")
# de-occlusion stage -> its completion with the true mask
INPUT_OF = {stage: k for k, stage in COMPLETED_BY.items() if k != "completed_predicted"}
# recogniser retrained on another completion than G's -> that completion's stage
RETRAINED_ON = {
    run_kinds.get(run_kinds.on_completion(b, g)).recognizer: g
    for b in run_kinds.RETRAINED
    for g in run_kinds.COMPLETIONS
    if g != "deocclusion"
}


def sees(recognizer: str, kind: str) -> bool:
  """Whether ``recognizer`` is embedded on input ``kind`` under
  ``config.evaluate.retrained_inputs='own'``: a recogniser retrained on another
  completion on the clean faces and that completion only, the others on all."""
  own = RETRAINED_ON.get(recognizer)
  return own is None or kind in ("clean", INPUT_OF[own])


# the completion grid's columns after clean / masked / mask / predicted mask
GRID_KINDS = (
    "mean_fill",
    "diffusion_fill",
    *library_fill.KEYS,
    "completed_predicted",
    "completed",
    "completed_noca",
    "completed_gfc",
    "completed_idgan",
)


class Evaluator:
  """Embeddings of every input of an evaluation set, made batch by batch.

  One pass over a set's faces reads a batch of records (or rows of in-memory
  arrays), occludes them, predicts their masks, fills them with every method
  asked for and embeds every input with every recogniser, sharded over all
  devices and hosts; it keeps only the embeddings (N, D), small per-face
  vectors (the segmenter's intersection / union pixel counts, occluder
  categories) and the first faces of a completion grid, so host memory does
  not grow with the number of faces or of inputs. Every batch has the global
  ``batch_size`` rows (the last padded with its last face), so a face's
  numbers do not depend on how many faces the set has.
  """

  def __init__(
      self, models: Models, mesh, batch_size: int, diffusion_iters: int, only_own: bool = False
  ):
    self.models = models
    # a recogniser retrained on another completion embeds only the clean faces and
    # that completion (config.evaluate.retrained_inputs 'own'), else every input
    self.wanted = lambda r, kind: not only_own or sees(r, kind)
    self.mesh = mesh
    n_dev = jax.process_count() * len(mesh.local_devices)
    self.batch_size = max(n_dev, -(-int(batch_size) // n_dev) * n_dev)
    self.diffusion_iters = int(diffusion_iters)
    # (id(faces or view), input kind, recogniser) -> (N, D) embeddings
    self._embeddings: dict[tuple[int, str, str], np.ndarray] = {}
    self._seg: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(view) -> (inter, union) (N,)
    self._grid: dict[int, dict[str, np.ndarray]] = {}  # id(view) -> column -> first faces
    self._sharded: dict[str, batch_map.ShardedFn] = {}
    self.timings: dict[str, float] = {}
    # (masked ++ mask) 4-channel batch -> filled faces; one function object per
    # kind so each compiles once.
    mean = jnp.asarray(models.mean_face)
    iters = self.diffusion_iters
    self._fills: dict[str, Callable[[jax.Array], jax.Array]] = {
        "mean_fill": lambda z: classical_fill.mean_face_fill(z[..., :3], z[..., 3:], mean),
        "diffusion_fill": lambda z: classical_fill.diffusion_fill(z[..., :3], z[..., 3:], iters),
    }
    for kind, fill in models.fills.items():  # RPCA / GL, from a library of training faces
      self._fills[kind] = library_fill.per_device(lambda z, f=fill: f(z[..., :3], z[..., 3:]), mesh)
    made: dict[str, Callable[[jax.Array], jax.Array]] = {}  # stage -> fill (one per network)
    for kind, stage in COMPLETED_BY.items():
      if stage in models.completions:
        complete = models.completions[stage]
        fill = made.setdefault(stage, lambda z, f=complete: f(z[..., :3], z[..., 3:]))
        self._fills[kind] = fill

  # ------------------------------------------------------------ batches

  def _fn(self, name: str) -> batch_map.ShardedFn:
    """The sharded function ``name`` ('segment', a fill kind, 'embed/<recogniser>')."""
    if name not in self._sharded:
      if name == "segment":
        fn = self.models.segment
      elif name.startswith("embed/"):
        fn = self.models.recognizers[name[len("embed/") :]]
      else:
        fn = self._fills[name]
      self._sharded[name] = batch_map.ShardedFn(fn, self.mesh)
    return self._sharded[name]

  def _apply(self, fn: batch_map.ShardedFn, rows: np.ndarray, what: str) -> np.ndarray:
    """``fn`` on the global batch of every host's ``rows``: the global result, float32."""
    t0 = time.perf_counter()
    batch = fn.assemble({"x": rows})
    out = np.asarray(jax.device_get(fn(batch["x"]))).astype(np.float32)
    self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - t0
    return out

  def _host(self, x: np.ndarray) -> np.ndarray:
    """This host's rows of a global batch."""
    per = self.batch_size // jax.process_count()
    return x[jax.process_index() * per : (jax.process_index() + 1) * per]

  @staticmethod
  def _gather(x: np.ndarray) -> np.ndarray:
    """Every host's rows -> the global batch's (the same on every host)."""
    if jax.process_count() == 1:
      return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True))

  def _batches(self, faces: Any) -> Iterator[tuple[int, int, Any]]:
    """(first face, faces in the batch, this host's batch context) of each
    global batch, padded to ``batch_size`` with the last face."""
    n, b = len(faces), self.batch_size
    per = b // jax.process_count()
    h = jax.process_index()
    for s in range(0, n, b):
      rows = np.minimum(np.arange(s, s + b), n - 1)[h * per : (h + 1) * per]
      yield s, min(b, n - s), faces.read(rows)

  def map(self, fn: Callable[[jax.Array], jax.Array], images: np.ndarray, what: str) -> np.ndarray:
    """``fn`` over every row of ``images`` (in memory), batch by batch."""
    faces, sharded = streaming.ArrayFaces(images), batch_map.ShardedFn(fn, self.mesh)
    out = [self._apply(sharded, faces.clean(ctx), what)[:k] for _, k, ctx in self._batches(faces)]
    return np.concatenate(out)

  # --------------------------------------------------------------- pass

  def _stream(
      self,
      faces: Any,
      clean_tag: tuple[int, str] | None,
      jobs: list[tuple[Any, tuple[str, ...]]],
      seg: bool = False,
      grid_of: Any = None,
      grid_rows: int = 0,
      images_of: tuple[Any, str] | None = None,
      recognizers: tuple[str, ...] | None = None,
  ) -> np.ndarray | None:
    """One pass over ``faces``: embeds the clean faces (under ``clean_tag``)
    and every (view, kind) of ``jobs`` with ``recognizers`` (default all)
    where not done yet; with ``seg``, the segmenter's counts of every view
    with a true mask; the first ``grid_rows`` faces of every grid column of
    view ``grid_of``. Returns the images of ``images_of`` (view, kind), if asked."""
    recs = tuple(self.models.recognizers) if recognizers is None else recognizers
    segment = self.models.segment is not None
    todo_clean = (
        [] if clean_tag is None else [r for r in recs if (*clean_tag, r) not in self._embeddings]
    )
    todo = []
    for view, kinds in jobs:
      emb = {
          k: [r for r in recs if (id(view), k, r) not in self._embeddings and self.wanted(r, k)]
          for k in kinds
      }
      emb = {k: rs for k, rs in emb.items() if rs}
      want_seg = seg and segment and streaming.has_mask(view) and id(view) not in self._seg
      want_grid = view is grid_of and grid_rows > 0 and id(view) not in self._grid
      want_images = images_of is not None and images_of[0] is view
      want_cat = isinstance(view, streaming.SourceView) and view.has_mask and view.category is None
      if emb or want_seg or want_grid or want_images or want_cat:
        todo.append((view, streaming.as_view(view), emb, want_seg, want_grid))
    if not todo_clean and not todo:
      return None
    acc: dict[Any, list[np.ndarray]] = {}
    grids: dict[int, dict[str, list[np.ndarray]]] = {}
    add = lambda key, x: acc.setdefault(key, []).append(x)  # noqa: E731
    for s, k, ctx in self._batches(faces):
      in_grid = s < grid_rows
      clean = faces.clean(ctx) if todo_clean or (in_grid and any(t[4] for t in todo)) else None
      for r in todo_clean:
        add((*clean_tag, r), self._apply(self._fn(f"embed/{r}"), clean, f"embed/{r}")[:k])
      for view, av, emb, want_seg, want_grid in todo:
        masked, mask, cat, cov = av.batch(ctx)
        if cat is not None:
          add((id(view), "category"), self._gather(cat)[:k])
          add((id(view), "coverage"), self._gather(cov)[:k])
        gridding = want_grid and in_grid
        kinds = list(emb)
        if images_of is not None and images_of[0] is view and images_of[1] not in kinds:
          kinds.append(images_of[1])
        if gridding:
          kinds += [g for g in GRID_KINDS if g not in kinds and self.available(view, g)]
        needs_pred = any(
            kd != "masked" and (kd == "completed_predicted" or mask is None) for kd in kinds
        )
        pred = None
        if segment and (want_seg or needs_pred or gridding):
          pred = self._host(self._apply(self._fn("segment"), masked, "segment"))
        if want_seg and mask is not None:
          p = (pred > 0.5).reshape(len(pred), -1)
          t = (np.asarray(mask) > 0.5).reshape(len(mask), -1)
          add((id(view), "inter"), self._gather(np.sum(p & t, axis=1, dtype=np.int64))[:k])
          add((id(view), "union"), self._gather(np.sum(p | t, axis=1, dtype=np.int64))[:k])
        cols: dict[str, np.ndarray] = {}
        if gridding:
          cols = {"clean": clean, "masked": masked, "mask": mask}
          if pred is not None:
            cols["predicted mask"] = pred
        for kind in kinds:
          if kind == "masked":
            imgs = masked
          else:
            m = pred if (kind == "completed_predicted" or mask is None) else mask
            both = np.concatenate([masked, m.astype(np.float32)], axis=-1)
            imgs = self._host(self._apply(self._fn(kind), both, kind))
          if gridding and kind in GRID_KINDS:
            cols[INPUTS[kind]] = imgs
          if images_of is not None and images_of[0] is view and images_of[1] == kind:
            add("images", self._gather(imgs)[:k])
          for r in emb.get(kind, ()):
            add((id(view), kind, r), self._apply(self._fn(f"embed/{r}"), imgs, f"embed/{r}")[:k])
        for col, x in cols.items():
          if x is None:
            continue
          grids.setdefault(id(view), {}).setdefault(col, []).append(
              self._gather(x)[: min(k, grid_rows - s)]
          )
    out = {key: np.concatenate(v) for key, v in acc.items()}
    for view, _, emb, want_seg, want_grid in todo:
      for kind, rs in emb.items():
        for r in rs:
          self._embeddings[(id(view), kind, r)] = out[(id(view), kind, r)]
      if want_seg and (id(view), "inter") in out:
        self._seg[id(view)] = (out[(id(view), "inter")], out[(id(view), "union")])
      if want_grid:
        got = grids[id(view)]
        order = ["clean", "masked", "mask", "predicted mask"] + [INPUTS[g] for g in GRID_KINDS]
        self._grid[id(view)] = {c: np.concatenate(got[c]) for c in order if c in got}
      if isinstance(view, streaming.SourceView) and view.has_mask:
        view.category, view.coverage = out[(id(view), "category")], out[(id(view), "coverage")]
    for r in todo_clean:
      self._embeddings[(*clean_tag, r)] = out[(*clean_tag, r)]
    return out.get("images")

  def stream_verification(self, vs: Any, inputs: tuple[str, ...], grid_rows: int = 0) -> None:
    """Everything the verification evaluator reads of ``vs``, in one pass over its
    faces (``grid_rows``: the first faces of the mixture's completion grid)."""
    jobs = []
    for cond, view in vs.views.items():
      kinds = inputs if cond == protocols.MIXTURE else CATEGORY_INPUTS
      kinds = tuple(k for k in kinds if k in inputs and k != "clean" and self.available(view, k))
      jobs.append((view, kinds))
    grid_of = vs.views.get(protocols.MIXTURE) if grid_rows else None
    recs = verification_recognizers(self.models)
    faces = streaming.as_faces(vs.clean)
    self._stream(faces, (id(vs), "clean"), jobs, True, grid_of, grid_rows, recognizers=recs)

  def stream_identification(self, ids: Any, inputs: tuple[str, ...]) -> None:
    """Everything the identification evaluator reads of ``ids``: one pass over
    the gallery, one over each set of probe faces."""
    self._stream(streaming.as_faces(ids.gallery), (id(ids), "gallery"), [])
    groups: dict[int, tuple[Any, list[tuple[Any, tuple[str, ...]]]]] = {}
    for view in ids.probes.values():
      kinds = tuple(k for k in inputs if k != "clean" and self.available(view, k))
      faces = (
          view.faces if isinstance(view, streaming.SourceView) else streaming.ArrayView(view).faces
      )
      groups.setdefault(id(faces), (faces, []))[1].append((view, kinds))
    for faces, jobs in groups.values():
      self._stream(faces, None, jobs, True)

  # ---------------------------------------------------------- accessors

  def _faces_of(self, view: Any) -> Any:
    return view.faces if isinstance(view, streaming.SourceView) else streaming.ArrayView(view).faces

  def available(self, view: Any, kind: str) -> bool:
    """Whether ``kind`` can be computed for ``view`` with the models at hand."""
    if kind in ("clean", "masked"):
      return True
    known = streaming.has_mask(view)
    if (kind == "completed_predicted" or not known) and self.models.segment is None:
      return False  # needs the segmenter's mask
    if kind in COMPLETED_BY and COMPLETED_BY[kind] not in self.models.completions:
      return False  # that de-occlusion stage did not run
    if kind in library_fill.KEYS and kind not in self.models.fills:
      return False  # not in config.evaluate.inputs when the models were restored
    return not (kind in TRUE_MASK_ONLY and not known)

  def _check_segmenter(self) -> None:
    if self.models.segment is None:
      raise ValueError(
          "no occlusion segmenter in this run (stage 'segmentation'): needed "
          "for blind de-occlusion of faces without a known mask"
      )

  def predicted_mask(self, view: Any) -> np.ndarray:
    """The segmenter's masks of every face of an in-memory ``view`` (not kept)."""
    self._check_segmenter()
    return self.map(self.models.segment, view.masked, "segment")

  def images(self, view: Any, kind: str) -> np.ndarray:
    """Every face of ``view`` as input ``kind`` (computed again, not kept)."""
    if kind not in INPUTS or kind == "clean":
      raise ValueError(f"unknown input {kind!r}; choose from {[k for k in INPUTS if k != 'clean']}")
    if kind == "masked" and not isinstance(view, streaming.SourceView):
      return view.masked
    if kind != "masked" and kind not in self._fills:
      raise ValueError(f"input {kind!r} needs a model this run has not trained")
    if kind != "masked" and (kind == "completed_predicted" or not streaming.has_mask(view)):
      self._check_segmenter()
    return self._stream(self._faces_of(view), None, [(view, ())], images_of=(view, kind))

  def segmentation_counts(self, view: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-face (intersection, union) pixel counts of the predicted and true masks."""
    self._check_segmenter()
    if id(view) not in self._seg:
      self._stream(self._faces_of(view), None, [(view, ())], seg=True)
    return self._seg[id(view)]

  def grid(self, vs: Any, rows: int = 8) -> dict[str, np.ndarray]:
    """The completion grid's columns (clean, masked, mask, predicted mask, every
    fill available) of the first ``rows`` faces of ``vs``'s mixture."""
    view = vs.views[protocols.MIXTURE]
    if id(view) not in self._grid:
      faces = streaming.as_faces(vs.clean)
      self._stream(faces, None, [(view, ())], grid_of=view, grid_rows=rows)
    return self._grid[id(view)]

  def embed(self, recognizer: str, images: Any, tag: tuple[int, str]) -> np.ndarray:
    """Embeddings of clean faces (an array or a face set), kept under ``tag``."""
    key = (*tag, recognizer)
    if key not in self._embeddings:
      self._stream(streaming.as_faces(images), tag, [])  # every recogniser at once
    return self._embeddings[key]

  def embed_view(self, recognizer: str, view: Any, kind: str) -> np.ndarray:
    key = (id(view), kind, recognizer)
    if key not in self._embeddings:
      if kind not in INPUTS or kind == "clean":
        raise ValueError(f"unknown input {kind!r}; choose from {list(INPUTS)}")
      self._stream(self._faces_of(view), None, [(view, (kind,))])  # one fill, every recogniser
    return self._embeddings[key]

  def kept_arrays(self) -> dict[str, np.ndarray]:
    """Every array this evaluator keeps (for the memory test)."""
    out = {f"embedding {k}": v for k, v in self._embeddings.items()}
    out.update({f"seg {k}/{i}": v for k, per in self._seg.items() for i, v in enumerate(per)})
    out.update({f"grid {k}/{c}": v for k, per in self._grid.items() for c, v in per.items()})
    return out


# ------------------------------------------------------------ verification


def verification_recognizers(models: Models) -> tuple[str, ...]:
  """The recognisers of the verification tables: all but the identification-only
  rows (SR classifies a probe over a gallery; it has no embedding to compare
  two faces by)."""
  return tuple(r for r in models.recognizers if r not in models.identifiers)
