"""Networks from their config sections, and frozen inference functions of
trained parameters: what training builds to train, and what a trained run's
artefacts are turned back into (``runs/trained_models.py``).

Each ``*_from_config`` takes a stage's config section (the one stored in its
artefact); each ``*_fn`` closes over trained variables and returns a pure
function of images, the same in training's evaluations, the evaluation job,
inference and export.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from deocc_jax.losses.arcface import l2_normalize
from deocc_jax.models.generator import InpaintGenerator, complete
from deocc_jax.models.occlusion_segmenter import OcclusionSegmenter
from deocc_jax.models.student import ResNet18Student

State = dict[str, Any]
THRESHOLD = 0.5  # the occlusion segmenter's default probability threshold

EmbedFn = Callable[[jax.Array], jax.Array]


# ------------------------------------------------------------ recognisers


def teacher_backbone(cfg: ConfigDict, num_classes: int | None = None) -> ResNet18Student:
  """The ArcFace teacher trained here (``config.teacher``)."""
  return ResNet18Student(
      embedding_dim=int(cfg.embed_dim),
      num_classes=num_classes,
      width=float(cfg.width),
      small_input_stem=bool(cfg.small_input_stem),
      dtype=jnp.dtype(cfg.dtype),
  )


def teacher_embed_fn(cfg: ConfigDict, state: State) -> EmbedFn:
  """L2-normalised teacher embeddings of images in [-1, 1] (inference mode)."""
  backbone = teacher_backbone(cfg)
  variables = {"params": state["params"]["backbone"], "batch_stats": state["batch_stats"]}

  def f(images: jax.Array) -> jax.Array:
    out = backbone.apply(variables, images, train=False)
    return l2_normalize(out["embedding"].astype(jnp.float32))

  return f


def student_from_config(
    cfg: ConfigDict, embed_dim: int, num_classes: int | None
) -> ResNet18Student:
  """The ResNet-18 student with an ``embed_dim`` embedding layer (paper Sec. 3.2)."""
  return ResNet18Student(
      embedding_dim=embed_dim,
      num_classes=num_classes,
      width=float(cfg.width),
      small_input_stem=bool(cfg.small_input_stem),
      dtype=jnp.dtype(cfg.dtype),
  )


def student_embed_fn(cfg: ConfigDict, embed_dim: int, state: State) -> EmbedFn:
  """L2-normalised student embeddings (inference mode). The classifier is not
  needed (and not built) for embedding, whatever its size."""
  student = student_from_config(cfg, embed_dim, None)
  params = {k: v for k, v in state["params"].items() if k != "classifier"}
  variables = {"params": params, "batch_stats": state["batch_stats"]}

  def f(images: jax.Array) -> jax.Array:
    return l2_normalize(student.apply(variables, images, train=False)["embedding"])

  return f


def finetuned_embed_fn(teacher: Any, state: State) -> EmbedFn:
  """L2-normalised embeddings of a fine-tuned teacher network (images in
  [-1, 1]): ``state['params']['backbone']`` replaces the network's parameters,
  ``state['fixed']`` holds its other collections."""
  variables = {**state["fixed"], "params": state["params"]["backbone"]}

  def f(images: jax.Array) -> jax.Array:
    return l2_normalize(teacher.apply(variables, images)["embedding"].astype(jnp.float32))

  return f


# ----------------------------------------------- generator and segmenter


def generator_from_config(cfg: ConfigDict) -> InpaintGenerator:
  """The de-occlusion generator G (coarse + refinement nets, Sec. 3.1)."""
  return InpaintGenerator(
      cnum=int(cfg.cnum),
      dtype=jnp.dtype(cfg.dtype),
      use_contextual_attention=bool(cfg.contextual_attention),
  )


def complete_fn(cfg: ConfigDict, g_params: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Frozen generator: (masked, mask) -> completed faces ``X*(1-M) + G*M`` (Eq. 1)."""
  gen = generator_from_config(cfg)

  def f(x: jax.Array, m: jax.Array) -> jax.Array:
    out = gen.apply({"params": g_params}, x, m)
    return complete(x, m, out.refined)

  return f


def segmenter_from_config(cfg: ConfigDict) -> OcclusionSegmenter:
  """The occlusion segmenter of blind de-occlusion."""
  return OcclusionSegmenter(width=int(cfg.width), dtype=jnp.dtype(cfg.dtype))


def predict_mask_fn(
    cfg: ConfigDict, params: Any, threshold: float = THRESHOLD
) -> Callable[[jax.Array], jax.Array]:
  """Frozen segmenter: masked (B, H, W, 3) -> binary mask (B, H, W, 1) float32."""
  model = segmenter_from_config(cfg)

  @jax.jit
  def f(x: jax.Array) -> jax.Array:
    prob = jax.nn.sigmoid(model.apply({"params": params}, x))
    return (prob > threshold).astype(jnp.float32)

  return f
