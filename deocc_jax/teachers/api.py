"""One API for every teacher: converted from PyTorch, dlib's ResNet, or trained here.

A :class:`Teacher` is a frozen recogniser as explicit data: a parameter
pytree and a pure ``apply(params, images) -> {'embedding', 'logits'?}``
taking faces as float images in [-1, 1] (the pipeline's convention) at any
resolution; the teacher resizes / re-normalises to its own input format.
Embeddings are L2-normalised. ``logits`` are the teacher's class outputs
(``num_classes`` of them), the input of the distillation's ``L_CE`` (Eq. 10
with cross-entropy, ``config.distillation.ce_target='teacher'``):

* converted VGGFace2 ResNet-50 / SE-ResNet-50: the ``fc`` layer over the 8,631
  VGGFace2 training identities (kept by the converter);
* converted facenet InceptionResnetV1: its ``logits`` layer (8,631 classes);
* ArcFace trained here: ``arcface_scale * cos(theta_c)``, the ArcFace head's
  cosine logits at its training scale, without the margin (the margin is a
  training-time penalty on the true class only; at inference the class scores
  are the scaled cosines);
* dlib: no classifier (``num_classes`` None, no ``logits``).

    from deocc_jax.teachers import api
    t = api.load_teacher("dlib")                           # ships on PyPI
    t = api.load_teacher("converted", path="ckpt/vggface2")  # python -m deocc_jax.convert
    # the ArcFace teacher trained by the main job: runs.factories.load_teacher(config, workdir)
    emb = t.embed(images)          # (B, D) numpy, images (B, H, W, 3) uint8 or [-1, 1]

Images should be aligned to the teacher's canonical crop
(:func:`deocc_jax.data.alignment.align_face`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from deocc_jax.data import alignment
from deocc_jax.data.dlib_chip import dlib_chip_matrix
from deocc_jax.losses.arcface import l2_normalize
from deocc_jax.utils.face_geometry import estimate_similarity

KINDS = ("dlib", "converted")  # pretrained; 'arcface' is trained by the main job


@dataclasses.dataclass(frozen=True)
class Teacher:
  name: str
  params: Any
  apply: Callable[[Any, jax.Array], dict[str, jax.Array]]
  embed_dim: int
  input_size: int
  metadata: dict[str, Any]
  num_classes: int | None = None  # classes of ``logits``; None: no classifier

  @functools.cached_property
  def embed_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    """``jax.jit`` of ``apply(...)['embedding']``, built once per teacher (so
    repeated :meth:`embed` calls reuse its compilations)."""
    return jax.jit(lambda p, b: self.apply(p, b)["embedding"])

  def embed(self, images: Any, batch_size: int = 64) -> np.ndarray:
    """(B, H, W, 3) uint8 [0, 255] or float [-1, 1] -> (B, D) L2-normalised."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"{self.name}: images must be (B, H, W, 3), got {x.shape}")
    if x.dtype == np.uint8:
      x = x.astype(np.float32) / 127.5 - 1.0
    fn = self.embed_fn
    out = [
        np.asarray(fn(self.params, jnp.asarray(x[i : i + batch_size], jnp.float32)))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)


def l2_normalized(x: jax.Array) -> jax.Array:
  """float32 L2-normalised embeddings (every teacher's output convention)."""
  return l2_normalize(x.astype(jnp.float32))


def resize_to(images: jax.Array, size: int) -> jax.Array:
  """(B, H, W, C) images resized to (B, size, size, C) (antialiased; no-op at size)."""
  if images.shape[1] == size and images.shape[2] == size:
    return images
  return jax.image.resize(
      images, (images.shape[0], size, size, images.shape[3]), "linear", antialias=True
  )


# The crop each pretrained teacher was trained on (``data/alignment.py``'s
# templates): VGGFace2's loose box resized to 256 then centre-cropped to 224,
# facenet's 160 px crop, insightface's 112 px five-point template, dlib's
# 150 px chip.
PROTOCOLS = {
    "dlib": "dlib",
    "inception_resnet_v1": "facenet",
    "vggface2_resnet50": "vggface2",
    "vggface2_senet50": "vggface2",
    "iresnet": "arcface",
    "iresnet18": "arcface",
    "iresnet34": "arcface",
    "iresnet50": "arcface",
    "iresnet100": "arcface",
    "iresnet200": "arcface",
    # VGGFace (Parkhi et al.) used loose detector boxes; the VGGFace2 crop is the
    # nearest template. SphereFace's 96 x 112 crop is the ArcFace template's
    # central 96 columns (the model cuts them from a 112 x 112 input).
    "vggface_vgg16": "vggface2",
    "sphereface20": "arcface",
}


def protocol_of(teacher: Teacher) -> str:
  """The alignment template of a pretrained teacher's own input protocol."""
  name = str(teacher.metadata.get("architecture", teacher.name))
  if name not in PROTOCOLS:
    raise ValueError(
        f"teacher {teacher.name!r} (architecture {name!r}) has no known input protocol; "
        f"known: {sorted(PROTOCOLS)} (or config.teacher.input_protocol='resize')"
    )
  return PROTOCOLS[name]


def frame_to_protocol(
    frame_landmarks: np.ndarray, frame_size: int, template: str, size: int | None = None
) -> np.ndarray:
  """(2, 3) float64 map from the teacher's crop pixels to the pixels of a
  ``size`` x ``size`` image of the frame (default ``frame_size``) whose mean
  five landmarks are ``frame_landmarks`` (at ``frame_size``): the similarity
  that puts the template's points on the frame's (least squares), with dlib's
  chip convention for the 'dlib' template."""
  tpl = alignment.get_template(template)
  lm = np.asarray(frame_landmarks, np.float64).reshape(5, 2)
  lm = lm * (float(size or frame_size) / float(frame_size))
  m = estimate_similarity(tpl.points, lm)
  return dlib_chip_matrix(m, tpl.size) if tpl.dlib_chip else m


def warp_batch(images: jax.Array, m: np.ndarray, size: int) -> jax.Array:
  """(B, H, W, C) -> (B, size, size, C): output pixel (x, y) samples the input
  at ``m @ (x, y, 1)`` (bilinear, edges replicated). A map that shrinks by
  more than 1.25x first resizes the input (antialiased) so the bilinear step
  does not alias."""
  m = np.asarray(m, np.float64)
  h, w = int(images.shape[1]), int(images.shape[2])
  scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
  if scale > 1.25:
    nh, nw = max(1, round(h / scale)), max(1, round(w / scale))
    images = jax.image.resize(
        images, (images.shape[0], nh, nw, images.shape[3]), "linear", antialias=True
    )
    # resize's half-pixel centres: x_small = (x + 0.5) * nw / w - 0.5
    k = np.diag([nw / w, nh / h])
    m = np.concatenate([k @ m[:, :2], (k @ (m[:, 2] + 0.5) - 0.5)[:, None]], axis=1)
  warp = lambda image: alignment.warp_affine_jax(image, m, (size, size), mode="nearest")  # noqa: E731
  return jax.vmap(warp)(images)


def in_frame(
    teacher: Teacher, frame_landmarks: np.ndarray, frame_size: int, template: str | None = None
) -> Teacher:
  """``teacher`` reading faces of a training frame (faces aligned so their
  mean five landmarks are ``frame_landmarks`` at ``frame_size`` px): each
  input is warped from the frame to the teacher's own crop (``template``,
  default :func:`protocol_of`) before the teacher's preprocessing, so it sees
  faces at the scale and place it was trained on, not the whole frame resized."""
  template = template or protocol_of(teacher)
  size = int(alignment.get_template(template).size[0])
  frame = np.asarray(frame_landmarks, np.float64).reshape(5, 2)
  inner = teacher.apply

  def apply(params, images):
    m = frame_to_protocol(frame, frame_size, template, int(images.shape[1]))
    return inner(params, warp_batch(images, m, size))

  meta = dict(
      teacher.metadata,
      input_protocol={
          "template": template,
          "frame_landmarks": frame.tolist(),
          "frame_size": int(frame_size),
      },
  )
  return dataclasses.replace(teacher, apply=apply, metadata=meta)


def dlib_teacher(path: str | None = None) -> Teacher:
  """dlib's face-recognition ResNet (from the PyPI package face-recognition-models)."""
  from deocc_jax.teachers.dlib_resnet import load_dlib_resnet

  module, variables, meta = load_dlib_resnet(path)

  def apply(params, images):
    x = (resize_to(images, 150) + 1.0) * 127.5
    return {"embedding": l2_normalized(module.apply(params, x))}

  return Teacher("dlib", variables, apply, 128, 150, dict(meta), num_classes=None)


def converted_teacher(path: str) -> Teacher:
  """A teacher converted from PyTorch weights by ``python -m deocc_jax.convert``."""
  from deocc_jax.conversion.checkpoint import load_converted_teacher, preprocess_from_metadata

  module, variables, meta = load_converted_teacher(path)
  size = int(meta["input_size"][0])
  abstract = jax.eval_shape(lambda v: module.apply(v, jnp.zeros((1, size, size, 3))), variables)
  num_classes = int(abstract["logits"].shape[-1]) if "logits" in abstract else None

  def apply(params, images):
    x = (resize_to(images, size) + 1.0) * 127.5
    out = module.apply(params, preprocess_from_metadata(meta, x))
    res = {"embedding": l2_normalized(out["embedding"])}
    if "logits" in out:
      res["logits"] = out["logits"]
    return res

  return Teacher(
      str(meta["architecture"]),
      variables,
      apply,
      int(meta["embedding_size"]),
      size,
      dict(meta),
      num_classes=num_classes,
  )


def load_teacher(kind: str, path: str | None = None) -> Teacher:
  """Loads a pretrained teacher by kind: 'dlib', 'converted' (path = converter
  output dir). The ArcFace teacher trained by the main job comes from its run
  (``deocc_jax.runs.factories.load_teacher(config, workdir)``)."""
  if kind == "dlib":
    return dlib_teacher(path)
  if kind == "converted":
    if not path or not os.path.isdir(path):
      raise FileNotFoundError(
          f"converted teacher directory not found: {path!r} "
          "(create it with python -m deocc_jax.convert)"
      )
    return converted_teacher(path)
  if kind == "arcface":
    raise ValueError(
        "the 'arcface' teacher is trained by the main job: load it from its run "
        "(deocc_jax.runs.factories.load_teacher(config, workdir), or "
        "deocc_jax.inference.FaceRecognizer.from_run(workdir=...))"
    )
  raise ValueError(f"unknown teacher kind {kind!r}; choose from {KINDS}")
