"""Serving an exported recogniser (``python -m deocc_jax.export``) without Flax or the configs.

Needs only numpy, Pillow and ``jax`` (``runtime='jax'``: the serialized
StableHLO artifacts) or ``onnxruntime`` (``runtime='onnx'``)::

  from deocc_jax.serving import ExportedRecognizer
  rec = ExportedRecognizer("export/")                 # or runtime="onnx"
  v = rec.verify(img_a, img_b)                        # uint8 (H, W, 3) arrays
  v["score"], v["same"]                               # cosine, score >= threshold
  e = rec.embed([img_a, img_b], landmarks=[lm_a, lm_b])

Images are uint8 (H, W, 3) RGB ((H, W) gray and (H, W, 4) RGBA accepted).
Without landmarks an image must be an aligned square face crop like the
training faces, at least R x R and not blank (resized to R x R). With (5, 2)
landmarks (x, y pixels: left eye, right eye, nose, left mouth, right mouth)
the face is warped by the least-squares similarity onto the export's
template (the training crop's mean landmarks); its eyes must be at least
``face_warp.MIN_EYE_DISTANCE`` (8) pixels apart. The warp is
``deocc_jax.utils.face_warp``'s, the one ``infer`` uses (bilinear on float
channels, box pre-filtered when shrinking more than 2x), so an image gives the
same aligned face here as in :class:`deocc_jax.inference.FaceRecognizer`. Optional masks (occluded
pixels, (H, W) of the image, > 0.5 or > 127 for uint8) are warped the same
way; a face with a mask is completed by G with it, a face without one with
the segmenter's predicted mask (``input_kind`` 'completed_predicted'), as
:class:`deocc_jax.inference.FaceRecognizer` does. The only other parts of
``deocc_jax`` this module imports are ``deocc_jax.utils.face_geometry``
(numpy) and ``deocc_jax.utils.face_warp`` (numpy + Pillow): Flax,
ml_collections and the configs stay unloaded.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from deocc_jax.utils.face_geometry import (
    aligned_faces,
    as_rgb_uint8,
    cosine,
    estimate_similarity,
    resize_matrix,
)
from deocc_jax.utils.face_warp import check_aligned_crop, check_face_size, warp_face, warp_mask

__all__ = ["ExportedRecognizer"]

FORMAT = "deocc-jax-export/1"
WAYS_OUT = "give the face's 5 landmarks (landmarks=) or crop the face square yourself"


class ExportedRecognizer:
  """The exported pipeline in ``folder`` (``metadata.json`` + artifacts).

  Args:
    folder: the output folder of ``python -m deocc_jax.export``.
    runtime: 'jax' (``jax.export`` artifacts) or 'onnx' (onnxruntime).
    max_batch: largest batch run at once (batches are padded to powers of two
      up to it, so few shapes are compiled).
    threshold: overrides the exported (calibrated) threshold.
    providers: onnxruntime execution providers for runtime 'onnx' (default: CPU).
  """

  def __init__(
      self,
      folder: str,
      runtime: str = "jax",
      max_batch: int = 64,
      threshold: float | None = None,
      providers: Sequence[str] | None = None,
  ):
    self.folder = os.fspath(folder)
    path = os.path.join(self.folder, "metadata.json")
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"{path} not found: not an export folder (write one with "
          f"`python -m deocc_jax.export --workdir=RUN --out=DIR`)"
      )
    with open(path) as f:
      meta = json.load(f)
    if meta.get("format") != FORMAT:
      raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if runtime not in ("jax", "onnx"):
      raise ValueError(f"runtime must be 'jax' or 'onnx', got {runtime!r}")
    self.metadata = meta
    self.runtime = runtime
    if providers and runtime != "onnx":
      raise ValueError("providers (onnxruntime execution providers) need runtime='onnx'")
    self.providers = list(providers) if providers else ["CPUExecutionProvider"]
    pre = meta["preprocessing"]
    self.resolution = int(pre["resolution"])
    self.template_landmarks = np.asarray(pre["template_landmarks"], np.float64)
    self.threshold = float(meta["threshold"] if threshold is None else threshold)
    self.input_kind = str(meta["input_kind"])
    self.embedding_dim = int(meta["embedding_dim"])
    self.max_batch = max(1, int(max_batch))
    self._fns: dict[str, Callable[..., np.ndarray]] = {}

  # ---------------------------------------------------------------- models

  def _fn(self, name: str) -> Callable[..., Any]:
    """The artifact ``name`` (pipeline | embedder | generator | segmenter) as a callable."""
    if name in self._fns:
      return self._fns[name]
    if self.runtime == "jax":
      import jax
      from jax import export

      path = os.path.join(self.folder, f"{name}.jax_export")
      if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found (the run had no {name}?)")
      with open(path, "rb") as f:
        exp = export.deserialize(bytearray(f.read()))
      call = jax.jit(exp.call)

      def fn(*args: np.ndarray) -> Any:
        return jax.tree_util.tree_map(np.asarray, jax.device_get(call(*args)))

    else:
      import onnxruntime as ort

      path = os.path.join(self.folder, f"{name}.onnx")
      if not os.path.exists(path):
        err = self.metadata.get("onnx", {}).get(name, {}).get("error")
        raise FileNotFoundError(f"{path} not found" + (f" (export failed: {err})" if err else ""))
      opts = ort.SessionOptions()
      opts.log_severity_level = 3
      sess = ort.InferenceSession(path, opts, providers=self.providers)
      names = [i.name for i in sess.get_inputs()]

      def fn(*args: np.ndarray) -> Any:
        return sess.run(None, dict(zip(names, args)))[0]

    self._fns[name] = fn
    return fn

  def _batched(self, name: str, *arrays: np.ndarray) -> Any:
    """Runs artifact ``name`` in chunks padded to power-of-two sizes (<= max_batch)."""
    n = len(arrays[0])
    outs = []
    for start in range(0, n, self.max_batch):
      chunk = [np.ascontiguousarray(a[start : start + self.max_batch], np.float32) for a in arrays]
      k = len(chunk[0])
      size = 1
      while size < k:
        size *= 2
      size = min(size, self.max_batch)
      if size > k:
        chunk = [np.concatenate([c, np.repeat(c[-1:], size - k, axis=0)]) for c in chunk]
      out = self._fn(name)(*chunk)
      outs.append([o[:k] for o in out] if isinstance(out, (tuple, list)) else out[:k])
    if isinstance(outs[0], list):
      return tuple(np.concatenate(parts) for parts in zip(*outs))
    return np.concatenate(outs)

  def segment(self, faces: np.ndarray) -> np.ndarray:
    """Binary masks (N, R, R, 1) predicted for aligned faces (N, R, R, 3) in [-1, 1]."""
    return self._batched("segmenter", self._check(faces))

  def complete(self, faces: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """G's completions (N, R, R, 3) of aligned faces with masks (N, R, R, 1)."""
    return self._batched("generator", self._check(faces), np.asarray(masks, np.float32))

  def embed_aligned(
      self, faces: np.ndarray, masks: Sequence[np.ndarray | None] | None = None
  ) -> np.ndarray:
    """(N, D) L2-normalised embeddings of aligned faces (N, R, R, 3) in [-1, 1];
    ``masks[i]`` ((R, R) / (R, R, 1), 1 = occluded) or None (predicted / none)."""
    x = self._check(faces)
    n = len(x)
    given = [None] * n if masks is None else list(masks)
    if len(given) != n:
      raise ValueError(f"{n} faces but {len(given)} masks")
    completing = self.input_kind in ("completed", "completed_predicted")
    with_mask = [i for i in range(n) if given[i] is not None and completing]
    rest = [i for i in range(n) if i not in set(with_mask)]
    out = np.zeros((n, self.embedding_dim), np.float32)
    if with_mask:
      m = np.stack([self._check_mask(given[i], i) for i in with_mask])
      out[with_mask] = self._batched("embedder", self.complete(x[with_mask], m))
    if rest:
      if self.runtime == "jax":
        out[rest] = self._batched("pipeline", x[rest])[0]
      elif self.input_kind == "completed_predicted":
        xr = x[rest]
        out[rest] = self._batched("embedder", self.complete(xr, self.segment(xr)))
      else:
        out[rest] = self._batched("embedder", x[rest])
    return out

  def _check(self, faces: Any) -> np.ndarray:
    return aligned_faces(faces, self.resolution, "use preprocess() on uint8 images")

  def _check_mask(self, mask: np.ndarray, i: int) -> np.ndarray:
    r = self.resolution
    m = np.asarray(mask, np.float32)
    if m.shape == (r, r):
      m = m[..., None]
    if m.shape != (r, r, 1):
      raise ValueError(
          f"mask {i} must be ({r}, {r}) or ({r}, {r}, 1) once aligned, got " f"{np.shape(mask)}"
      )
    return (m > 0.5).astype(np.float32)

  # ---------------------------------------------------------------- images

  def crop_transform(
      self, shape: Sequence[int], landmarks: np.ndarray | None = None, name: str = "image"
  ) -> np.ndarray:
    """(2, 3) map from crop pixels (R x R) to image pixels (pixel centres at integers)."""
    r = self.resolution
    h, w = int(shape[0]), int(shape[1])
    if landmarks is None:
      if h != w:
        raise ValueError(
            f"{name} is {w}x{h}, not square: without landmarks an image must be "
            f"an aligned square face crop; {WAYS_OUT}"
        )
      return resize_matrix(h, r)
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (5, 2) or not np.isfinite(lm).all():
      raise ValueError(f"{name}: landmarks must be finite (5, 2) (x, y) pixels, got {lm.shape}")
    return estimate_similarity(self.template_landmarks, lm)

  def preprocess(
      self,
      image: Any,
      landmarks: np.ndarray | None = None,
      mask: np.ndarray | None = None,
      name: str = "image",
  ) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 image -> ((R, R, 3) float32 face in [-1, 1], (R, R, 1) mask or None).

    The warp is ``face_warp.warp_face`` / ``warp_mask``, the one ``infer`` uses."""
    img = as_rgb_uint8(image, name)
    h, w = img.shape[:2]
    m = self.crop_transform(img.shape, landmarks, name)
    if landmarks is None:
      check_aligned_crop(img, self.resolution, name, WAYS_OUT)
    else:
      check_face_size(landmarks, name, self.resolution)
    x = warp_face(img, m, self.resolution)
    aligned_mask = None
    if mask is not None:
      mk = np.asarray(mask)
      if mk.ndim == 3:
        mk = mk[..., -1] if mk.shape[2] == 4 else mk.mean(axis=-1)
      if mk.shape != (h, w):
        raise ValueError(
            f"{name}: mask is {np.shape(mask)}, image is {w}x{h}: a mask must "
            f"have its image's size"
        )
      binary = (mk > 127) if np.asarray(mask).dtype == np.uint8 else (mk > 0.5)
      aligned_mask = warp_mask(binary, m, self.resolution)
    return x, aligned_mask

  def embed(
      self,
      images: Sequence[Any] | np.ndarray,
      masks: Sequence[np.ndarray | None] | None = None,
      landmarks: Sequence[np.ndarray | None] | None = None,
  ) -> np.ndarray:
    """(N, D) float32 embeddings of uint8 images (see the module docstring)."""
    n = len(images)
    if n == 0:
      raise ValueError("no images to embed")
    for what, seq in (("masks", masks), ("landmarks", landmarks)):
      if seq is not None and len(seq) != n:
        raise ValueError(f"{n} images but {len(seq)} {what}")
    faces, ms = [], []
    for i in range(n):
      x, m = self.preprocess(
          images[i],
          None if landmarks is None else landmarks[i],
          None if masks is None else masks[i],
          name=f"image {i}",
      )
      faces.append(x)
      ms.append(m)
    return self.embed_aligned(np.stack(faces), ms)

  def verify(
      self,
      image_a: Any,
      image_b: Any,
      mask_a: np.ndarray | None = None,
      mask_b: np.ndarray | None = None,
      landmarks_a: np.ndarray | None = None,
      landmarks_b: np.ndarray | None = None,
  ) -> dict[str, Any]:
    """Same person? ``{"score": cosine, "threshold", "same": score >= threshold}``."""
    e = self.embed([image_a, image_b], [mask_a, mask_b], [landmarks_a, landmarks_b])
    score = float(cosine(e[0], e[1]))
    return {"score": score, "threshold": self.threshold, "same": bool(score >= self.threshold)}
