"""The frozen recognition pipeline of a run: align -> (segment) -> complete ->
embed -> cosine score -> decide (see :mod:`deocc_jax.inference` for the
alignment modes, masks, input kinds and errors)."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from typing import Any, Callable, Sequence

import numpy as np
from etils import epath

from deocc_jax.data.dataset_formats import IMAGE_EXTENSIONS
from deocc_jax.data.dlib_chip import dlib_chip_matrix, extract_dlib_chip
from deocc_jax.inference.calibration import calibrated_threshold, read_calibration
from deocc_jax.inference.gallery import Gallery, Match
from deocc_jax.inference.images import (
    ImageErrors,
    ImageLike,
    MaskLike,
    label_of,
    list_images,
    name_of,
    read_mask,
    size_text,
)
from deocc_jax.inference.input_files import Pair
from deocc_jax.inference.locate import ALIGN_MODES, Located, locate
from deocc_jax.inference.results import Face, PairScore, Prepared, Verification
from deocc_jax.utils.face_geometry import (
    aligned_faces,
    cosine,
    estimate_similarity,
    identity_scores,
    resize_matrix,
)
from deocc_jax.utils.face_warp import warp_face, warp_mask

__all__ = ["FaceRecognizer", "INPUT_KINDS", "ALIGN_MODES", "MASK_SOURCES"]

INPUT_KINDS = ("completed_predicted", "completed", "masked", "clean")
MASK_SOURCES = ("given", "predicted", "none")


class FaceRecognizer:
  """Frozen pipeline: align -> (segment) -> complete -> embed -> cosine score -> decide.

  Args:
    embed: (B, R, R, 3) float32 [-1, 1] -> (B, D) L2-normalised embeddings.
    resolution: R.
    threshold: cosine threshold, ``same = score >= threshold``.
    template_landmarks: (5, 2) landmarks of the training crop at R x R.
    complete: G, (masked (B,R,R,3), mask (B,R,R,1)) -> completed, or None.
    segment: masked (B,R,R,3) -> binary mask (B,R,R,1), or None.
    name: the recogniser's key (checked against saved galleries).
    input_kind: 'auto' or one of ``INPUT_KINDS`` (see the module docstring).
    mesh: a device mesh to shard batches over (None: the default device).
    batch_size: largest batch run at once.

  ``landmarks_table`` (default None): from :func:`read_landmarks_file`; image
  files found in it are aligned by its landmarks. ``located`` (default None):
  from ``locate.locate_all``, image files already read and detected.
  """

  landmarks_table: dict[str, np.ndarray] | None = None
  located: dict[str, Located | Exception] | None = None
  template: str = ""  # 'dlib': dlib's chip protocol (pretrained.from_teacher)
  # (sources, Prepared) of the last verify_pairs call (for --save_completions)
  last_prepared: tuple[tuple[str, ...], Prepared] | None = None

  def __init__(
      self,
      embed: Callable[[Any], Any],
      resolution: int,
      threshold: float,
      template_landmarks: np.ndarray,
      complete: Callable[[Any, Any], Any] | None = None,
      segment: Callable[[Any], Any] | None = None,
      name: str = "",
      input_kind: str = "auto",
      mesh: Any = None,
      batch_size: int = 32,
  ):
    self.resolution = int(resolution)
    if self.resolution < 2:
      raise ValueError(f"resolution must be >= 2, got {resolution}")
    self.threshold = float(threshold)
    if not math.isfinite(self.threshold):
      raise ValueError(f"threshold must be finite, got {threshold}")
    tpl = np.asarray(template_landmarks, np.float64)
    if tpl.shape != (5, 2) or not np.isfinite(tpl).all():
      raise ValueError(f"template_landmarks must be finite (5, 2), got {tpl.shape}")
    self.template_landmarks = tpl
    self.input_kind = self.resolve_input_kind(input_kind, complete is not None, segment is not None)
    self.name = str(name)
    self.models: Any = None  # runs.models.Models when built by from_run
    self.calibration: dict[str, Any] | None = None
    from deocc_jax.utils.batch_map import BucketedBatchMap  # jax: imported when needed

    self._embed = BucketedBatchMap(embed, 1, mesh, batch_size)
    self._complete = None if complete is None else BucketedBatchMap(complete, 2, mesh, batch_size)
    self._segment = None if segment is None else BucketedBatchMap(segment, 1, mesh, batch_size)

  @staticmethod
  def resolve_input_kind(input_kind: str, has_generator: bool, has_segmenter: bool) -> str:
    """'auto' -> 'completed_predicted' (G + segmenter), 'completed' (G) or 'masked'."""
    if input_kind == "auto":
      if has_generator:
        return "completed_predicted" if has_segmenter else "completed"
      return "masked"
    if input_kind not in INPUT_KINDS:
      raise ValueError(f"input_kind must be 'auto' or one of {INPUT_KINDS}, got {input_kind!r}")
    if input_kind in ("completed", "completed_predicted") and not has_generator:
      raise ValueError(
          f"input_kind {input_kind!r} needs the de-occlusion generator "
          "(stage 'deocclusion'), which this run does not have"
      )
    if input_kind == "completed_predicted" and not has_segmenter:
      raise ValueError(
          "input_kind 'completed_predicted' needs the occlusion segmenter "
          "(stage 'segmentation'), which this run does not have"
      )
    return input_kind

  @classmethod
  def from_run(
      cls,
      config: Any = None,
      workdir: str | os.PathLike | None = None,
      recognizer: str = "student_soft",
      checkpoint: str | int = "latest",
      threshold: float | None = None,
      input_kind: str = "auto",
      batch_size: int = 32,
  ) -> FaceRecognizer:
    """Restores ``recognizer`` (and G, the segmenter) of the run in ``workdir``.

    ``FaceRecognizer.from_run(workdir)`` (or ``config=None``) reads the run's
    own config, ``<workdir>/config.json`` (written when training started);
    ``from_run(config, workdir)`` uses the given one. The threshold is
    ``thresholds[recognizer][input_kind]`` of ``<workdir>/results/calibration.json``
    unless ``threshold`` is given.
    """
    from deocc_jax.runs import factories
    from deocc_jax.runs.models import known_recognizers, restore_models

    if workdir is None and isinstance(config, (str, os.PathLike, epath.Path)):
      config, workdir = None, config  # from_run(workdir)
    if workdir is None:
      raise ValueError("from_run needs the run's workdir")
    workdir = os.fspath(workdir)
    if not epath.Path(workdir).is_dir():
      raise FileNotFoundError(f"workdir {workdir!r} does not exist")
    if config is None:
      from deocc_jax.runs import workdir as workdir_lib

      config = workdir_lib.read_config(workdir)
    known = known_recognizers(config)
    if recognizer not in known:
      raise ValueError(f"unknown recognizer {recognizer!r}; choose from {known}")
    cal = None
    if threshold is None:
      cal = read_calibration(workdir)  # fail before the slow restore
    models = restore_models(config, workdir, checkpoint, recognizers=(recognizer,))
    kind = cls.resolve_input_kind(
        input_kind, models.complete is not None, models.segment is not None
    )
    if cal is not None:
      threshold = calibrated_threshold(cal, workdir, recognizer, kind, models.resolution)
    fr = cls(
        models.recognizers[recognizer],
        models.resolution,
        float(threshold),
        models.mean_landmarks,
        models.complete,
        models.segment,
        name=recognizer,
        input_kind=kind,
        mesh=factories.make_mesh(config),
        batch_size=batch_size,
    )
    fr.models = models
    fr.calibration = cal
    return fr

  def checkpoint_steps(self) -> dict[str, int]:
    """The restored step of each model this recogniser runs ({} when not from a run)."""
    steps = getattr(self.models, "steps", None) or {}
    return {str(k): int(v) for k, v in sorted(steps.items())}

  def with_threshold(self, threshold: float) -> FaceRecognizer:
    """A copy deciding with another threshold (models shared, nothing recompiled)."""
    t = float(threshold)
    if not math.isfinite(t):
      raise ValueError(f"threshold must be finite, got {threshold}")
    out = copy.copy(self)
    out.threshold = t
    return out

  # ---------------------------------------------------------------- loading

  def _transform(self, lm: np.ndarray | None, shape: Sequence[int], name: str) -> np.ndarray:
    """The crop -> image map of a located face (``lm`` None: an aligned crop)."""
    if lm is None:
      return resize_matrix(int(shape[0]), self.resolution)
    try:
      return estimate_similarity(self.template_landmarks, lm)
    except ValueError as e:
      raise ValueError(f"{name}: cannot align to these landmarks ({e})") from e

  def locate(
      self,
      image: ImageLike,
      landmarks: np.ndarray | None = None,
      align: str | None = None,
      name: str | None = None,
  ) -> Located:
    """The image's pixels and the landmarks to align it by (``locate.locate``);
    a path found in ``located`` (from ``locate.locate_all``) is not read again."""
    src = name or name_of(image, "image")
    if landmarks is None and self.located and isinstance(image, (str, os.PathLike)):
      hit = self.located.get(os.fspath(image))
      if isinstance(hit, Exception):
        raise hit
      if hit is not None:
        return hit
    return locate(image, src, self.resolution, align, landmarks, self.landmarks_table)

  def load(
      self,
      image: ImageLike,
      mask: MaskLike | None = None,
      landmarks: np.ndarray | None = None,
      align: str | None = None,
      name: str | None = None,
  ) -> Face:
    """Reads and aligns one face (and its mask, warped the same way)."""
    src = name or name_of(image, "image")
    found = self.locate(image, landmarks, align, src)
    img = found.image
    if self.template == "dlib" and found.landmarks is not None:  # dlib's own chip
      fit = self._transform(found.landmarks, img.shape, src)
      size = (self.resolution, self.resolution)
      face = extract_dlib_chip(img, fit, size) * np.float32(2.0 / 255.0) - np.float32(1.0)
      face, m = face.astype(np.float32), dlib_chip_matrix(fit, size)
    else:
      m = self._transform(found.landmarks, img.shape, src)
      face = warp_face(img, m, self.resolution)
    aligned_mask = None
    if mask is not None:
      aligned_mask = self.load_mask(mask, img.shape[:2], src, m)
    return Face(face, aligned_mask, src, tuple(img.shape[:2]), m, found.landmarks)

  def load_face(
      self, image: ImageLike, landmarks: np.ndarray | None = None, align: str | None = None
  ) -> np.ndarray:
    """(R, R, 3) float32 [-1, 1] aligned face (see the module docstring for ``align``)."""
    return self.load(image, landmarks=landmarks, align=align).face

  def load_mask(
      self,
      mask: MaskLike,
      like_shape: Sequence[int],
      source_name: str = "image",
      transform: np.ndarray | None = None,
  ) -> np.ndarray:
    """(R, R, 1) float32 {0, 1} mask of an image of original size ``like_shape``
    (H, W), warped by ``transform`` (the face's crop -> image map; default:
    the square resize of align='none')."""
    mname = name_of(mask, "(array)")
    raw = read_mask(mask, mname)
    h, w = int(like_shape[0]), int(like_shape[1])
    if raw.shape != (h, w):
      raise ValueError(
          f"mask {mname} is {size_text(raw.shape)} but image {source_name} is "
          f"{w}x{h}: a mask must have its image's size"
      )
    if transform is None:
      if h != w:
        raise ValueError(f"image {source_name} is {w}x{h}, not square: pass its transform")
      transform = resize_matrix(h, self.resolution)
    return warp_mask(raw, transform, self.resolution)

  def load_many(
      self,
      images: Sequence[ImageLike] | np.ndarray,
      masks: Sequence[MaskLike | None] | None = None,
      landmarks: Sequence[np.ndarray | None] | None = None,
      align: str | None = None,
      names: Sequence[str] | None = None,
  ) -> list[Face]:
    """:meth:`load` over a list (or an (N, H, W, 3) uint8 array)."""
    n = len(images)
    for what, seq in (("masks", masks), ("landmarks", landmarks), ("names", names)):
      if seq is not None and len(seq) != n:
        raise ValueError(f"{n} images but {len(seq)} {what}")
    return [
        self.load(
            images[i],
            None if masks is None else masks[i],
            None if landmarks is None else landmarks[i],
            align,
            None if names is None else names[i] if names[i] else None,
        )
        for i in range(n)
    ]

  # ---------------------------------------------------------------- models

  def predict_masks(self, faces: np.ndarray) -> np.ndarray:
    """The segmenter's binary masks (N, R, R, 1) of aligned faces (N, R, R, 3)."""
    if self._segment is None:
      raise ValueError("this run has no occlusion segmenter (stage 'segmentation')")
    return self._segment(self._check_faces(faces))

  def _check_faces(self, faces: Any) -> np.ndarray:
    return aligned_faces(faces, self.resolution, "load images with load_face()")

  def prepare(
      self,
      faces: Sequence[Face] | np.ndarray,
      masks: Sequence[np.ndarray | None] | np.ndarray | None = None,
  ) -> Prepared:
    """Completes aligned faces per ``input_kind``: given masks first (``Face.mask``
    or ``masks``, (R, R, 1) each or None), else the segmenter's."""
    if len(faces) and isinstance(faces[0], Face):
      if masks is None:
        masks = [f.mask for f in faces]
      faces = np.stack([f.face for f in faces])
    x = self._check_faces(faces)
    n, r = len(x), self.resolution
    given: list[np.ndarray | None] = [None] * n if masks is None else list(masks)
    if len(given) != n:
      raise ValueError(f"{n} faces but {len(given)} masks")
    m = np.zeros((n, r, r, 1), np.float32)
    sources = ["none"] * n
    for i, g in enumerate(given):
      if g is not None:
        g = np.asarray(g, np.float32)
        if g.shape == (r, r):
          g = g[..., None]
        if g.shape != (r, r, 1):
          raise ValueError(
              f"mask {i} must be ({r}, {r}, 1) (aligned; see load_mask), got " f"{g.shape}"
          )
        m[i] = g > 0.5
        sources[i] = "given"
    if self.input_kind == "completed_predicted":
      todo = [i for i in range(n) if sources[i] == "none"]
      if todo:
        m[todo] = self._segment(x[todo])
        for i in todo:
          sources[i] = "predicted"
    completed = x.copy()
    if self.input_kind in ("completed", "completed_predicted"):
      todo = [i for i in range(n) if sources[i] != "none"]
      if todo:
        completed[todo] = self._complete(x[todo], m[todo])
    return Prepared(x, completed, m, tuple(sources))

  def embed_prepared(self, images: np.ndarray) -> np.ndarray:
    """(N, D) float32 embeddings of (N, R, R, 3) images, as they are."""
    return self._embed(self._check_faces(images))

  def embed(
      self,
      images: Sequence[ImageLike] | np.ndarray,
      masks: Sequence[MaskLike | None] | None = None,
      align: str | None = None,
      landmarks: Sequence[np.ndarray | None] | None = None,
  ) -> np.ndarray:
    """(N, D) float32 embeddings: load -> prepare -> embed."""
    faces = self.load_many(images, masks, landmarks, align)
    if not faces:
      raise ValueError("no images to embed")
    return self.embed_prepared(self.prepare(faces).completed)

  # ---------------------------------------------------------------- decisions

  cosine = staticmethod(cosine)  # row-wise cosine similarity in float64

  def verify(
      self,
      image_a: ImageLike,
      image_b: ImageLike,
      mask_a: MaskLike | None = None,
      mask_b: MaskLike | None = None,
      align: str | None = None,
      landmarks_a: np.ndarray | None = None,
      landmarks_b: np.ndarray | None = None,
  ) -> Verification:
    """Same person? ``score`` = cosine of the two embeddings, ``same = score >= threshold``."""
    fa = self.load(image_a, mask_a, landmarks_a, align, name=name_of(image_a, "image_a"))
    fb = self.load(image_b, mask_b, landmarks_b, align, name=name_of(image_b, "image_b"))
    p = self.prepare([fa, fb])
    e = self.embed_prepared(p.completed)
    score = float(self.cosine(e[0], e[1]))
    return Verification(
        score,
        self.threshold,
        bool(score >= self.threshold),
        (p.masks[0], p.masks[1]),
        (p.mask_sources[0], p.mask_sources[1]),
        (p.completed[0], p.completed[1]),
    )

  def verify_pairs(
      self, pairs: Sequence[Pair | tuple[str, ...]], align: str | None = None, chunk: int = 0
  ) -> list[PairScore]:
    """:meth:`verify` for many pairs in one pass: every distinct (image, mask)
    is loaded, completed and embedded once (batched); ``chunk`` is unused
    (kept for callers that passed it).

    Errors name the image and, for :class:`Pair` items, the pairs-file line.
    """
    del chunk
    items = [p if isinstance(p, Pair) else Pair(*p) for p in pairs]
    keys: dict[tuple[str, str | None], int] = {}
    faces: list[Face] = []
    for p in items:
      for img, mask in ((p.image_a, p.mask_a), (p.image_b, p.mask_b)):
        if (img, mask) not in keys:
          try:
            faces.append(self.load(img, mask, align=align))
          except (FileNotFoundError, ValueError) as e:
            if p.line and type(e) in (FileNotFoundError, ValueError):
              raise type(e)(f"pairs line {p.line}: {e}") from e
            raise  # subclasses (undecodable file, no face) already name the file
          keys[(img, mask)] = len(faces) - 1
    if not faces:
      return []
    prepared = self.prepare(faces)
    self.last_prepared = (tuple(f.source for f in faces), prepared)
    emb = self.embed_prepared(prepared.completed)
    out: list[PairScore] = []
    for p in items:
      i, j = keys[(p.image_a, p.mask_a)], keys[(p.image_b, p.mask_b)]
      score = float(self.cosine(emb[i], emb[j]))
      out.append(
          PairScore(
              score,
              self.threshold,
              bool(score >= self.threshold),
              (prepared.mask_sources[i], prepared.mask_sources[j]),
              (float(np.mean(prepared.masks[i] > 0.5)), float(np.mean(prepared.masks[j] > 0.5))),
          )
      )
    return out

  def gallery_from_folder(
      self, folder: str, align: str | None = None, skip_errors: bool = False
  ) -> Gallery:
    """Embeds every image under ``folder`` (labels: first-level subfolders).

    Unusable files raise one :class:`ImageErrors` listing all of them, or
    with ``skip_errors`` are left out and listed in ``Gallery.skipped``.
    """
    folder = os.fspath(folder)
    rel = list_images(folder)
    if not rel:
      raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
    faces, kept, errors = [], [], []
    for p in rel:
      try:
        faces.append(self.load(os.path.join(folder, p), align=align))
        kept.append(p)
      except (FileNotFoundError, ValueError) as e:  # DatasetFormatError, NoFaceError, size
        errors.append((p, str(e)))
    if errors and not skip_errors:
      listed = "; ".join(msg for _, msg in errors[:20])  # messages name the files
      more = f"; ... ({len(errors) - 20} more)" if len(errors) > 20 else ""
      raise ImageErrors(
          f"{len(errors)} of {len(rel)} images under {folder} cannot be used "
          f"(nothing written; skip them with skip_errors=True / --skip_errors): "
          f"{listed}{more}",
          errors,
      )
    if not faces:
      raise ImageErrors(
          f"none of the {len(rel)} images under {folder} can be used: "
          + "; ".join(msg for _, msg in errors[:20]),
          errors,
      )
    emb = self.embed_prepared(self.prepare(faces).completed)
    return Gallery(
        emb,
        tuple(kept),
        tuple(label_of(p) for p in kept),
        tuple(errors),
        self.name,
        self.input_kind,
        folder,
        self.checkpoint_steps(),
    )

  def embed_folder(
      self, folder: str, out_path: str, align: str | None = None, skip_errors: bool = False
  ) -> Gallery:
    """Embeds a folder (:meth:`gallery_from_folder`) and writes ``out_path`` (.npz,
    atomically): ``embeddings`` (N, D) float32, ``paths`` (relative), ``labels``,
    ``skipped_paths`` / ``skipped_errors``, ``recognizer``, ``input_kind``.
    Nothing is written on error."""
    g = self.gallery_from_folder(folder, align, skip_errors)
    g.save(out_path)
    return dataclasses.replace(g, source=os.fspath(out_path))

  def load_gallery(
      self, gallery: str | Gallery, align: str | None = None, skip_errors: bool = False
  ) -> Gallery:
    """A :class:`Gallery`, an .npz from :meth:`embed_folder`, or a folder to embed."""
    if isinstance(gallery, Gallery):
      g = gallery
    elif os.path.isdir(os.fspath(gallery)):
      g = self.gallery_from_folder(gallery, align, skip_errors)
    else:
      g = Gallery.load(gallery)
    if g.recognizer and self.name and g.recognizer != self.name:
      raise ValueError(
          f"gallery {g.source or '(in memory)'} was embedded by recognizer "
          f"{g.recognizer!r}, not {self.name!r}: embeddings of different "
          f"recognizers are not comparable; re-embed it"
      )
    mine = self.checkpoint_steps()
    if g.checkpoint_steps and mine and g.checkpoint_steps != mine:
      raise ValueError(
          f"gallery {g.source or '(in memory)'} was embedded with checkpoint steps "
          f"{_steps_text(g.checkpoint_steps)}, the probes with {_steps_text(mine)}: embeddings "
          f"of different checkpoints are not comparable; re-embed the gallery or pick its "
          f"steps with --checkpoint"
      )
    if len(g.embeddings) == 0:
      raise ValueError(f"gallery {g.source or '(in memory)'} is empty")
    return g

  def identify(
      self,
      probes: Sequence[ImageLike] | np.ndarray,
      gallery: str | Gallery,
      top_k: int = 5,
      masks: Sequence[MaskLike | None] | None = None,
      align: str | None = None,
      landmarks: Sequence[np.ndarray | None] | None = None,
      skip_errors: bool = False,
  ) -> list[list[Match]]:
    """Per probe, the ``top_k`` gallery identities, best first: (label, score) with an
    identity's score the max cosine over its gallery images (ties: smaller label
    first). Images at the gallery's root are each their own identity (their path)."""
    if int(top_k) < 1:
      raise ValueError(f"top_k must be >= 1, got {top_k}")
    g = self.load_gallery(gallery, align, skip_errors)
    p = self.embed(probes, masks, align, landmarks)
    if p.shape[1] != g.embeddings.shape[1]:
      raise ValueError(
          f"gallery {g.source or '(in memory)'} has {g.embeddings.shape[1]}-d "
          f"embeddings, this recognizer {p.shape[1]}-d: re-embed it"
      )
    ids, scores = identity_scores(g.embeddings, np.array(g.identities()), p)
    k = min(int(top_k), len(ids))
    out = []
    for row in scores:
      order = np.lexsort((np.arange(len(ids)), -row))[:k]  # score desc, label asc
      out.append([Match(str(ids[j]), float(row[j])) for j in order])
    return out


def _steps_text(steps: dict[str, int]) -> str:
  return ", ".join(f"{k}={v}" for k, v in sorted(steps.items()))
