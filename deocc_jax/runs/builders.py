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
import optax
from ml_collections import ConfigDict

from deocc_jax.losses.arcface import l2_normalize
from deocc_jax.losses.gfc import GFCWeights
from deocc_jax.losses.idgan import IDGANWeights
from deocc_jax.models import completion_baselines as cb
from deocc_jax.models.face_parser import FaceParser
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


# Completion networks a de-occlusion stage trains (its artefact's 'architecture'):
# DeepFill v1's G (stages 'deocclusion', 'deocclusion_noca'), GFC, IDGAN (Table 2).
ARCHITECTURES = ("deepfill", "gfc", "idgan")
CompleteFn = Callable[[jax.Array, jax.Array], jax.Array]


def gfc_parser(cfg: ConfigDict) -> FaceParser:
  """GFC's parsing network (``config.deocclusion_gfc.parser_width``)."""
  return FaceParser(width=int(cfg.parser_width))


def gfc_fns(
    cfg: ConfigDict, resolution: int, g_tx=optax.identity(), d_tx=optax.identity()
) -> cb.CompletionFns:
  """GFC's pure steps (``models/completion_baselines.make_gfc_fns``) from
  ``config.deocclusion_gfc``; parsing targets: the batch's ``'parsing'`` labels."""
  weights = GFCWeights(
      reconstruction=float(cfg.lambda_reconstruction),
      adv_local=float(cfg.lambda_adv_local),
      adv_global=float(cfg.lambda_adv_global),
      parsing=float(cfg.lambda_parsing),
  )
  return cb.make_gfc_fns(
      int(resolution),
      g_tx,
      d_tx,
      base=int(cfg.base),
      fc_dim=int(cfg.fc_dim) or None,
      critic_cnum=int(cfg.critic_cnum),
      local_size=int(cfg.local_size),
      weights=weights,
      parser=gfc_parser(cfg),
      parsing_target="labels",
      use_noise_fill=bool(cfg.noise_fill),
  )


def idgan_fns(
    cfg: ConfigDict,
    resolution: int,
    embed: Callable[[Any, jax.Array], jax.Array] | None = None,
    g_tx=optax.identity(),
    d_tx=optax.identity(),
) -> cb.CompletionFns:
  """IDGAN's pure steps (``make_idgan_fns``) from ``config.deocclusion_idgan``;
  ``embed(params, images)``: the frozen recogniser (None: completion only)."""
  weights = IDGANWeights(
      reconstruction=float(cfg.lambda_reconstruction),
      adv_local=float(cfg.lambda_adv_local),
      adv_global=float(cfg.lambda_adv_global),
      identity=float(cfg.lambda_identity),
      diversity=float(cfg.lambda_diversity),
      margin=float(cfg.diversity_margin),
  )
  return cb.make_idgan_fns(
      int(resolution),
      g_tx,
      d_tx,
      embed if embed is not None else _no_recognizer,
      base=int(cfg.base),
      critic_cnum=int(cfg.critic_cnum),
      local_size=int(cfg.local_size),
      weights=weights,
      identity_target="clean",
  )


def _no_recognizer(params: Any, images: jax.Array) -> jax.Array:
  raise ValueError("IDGAN's completion needs no recogniser; its training step does")


def completion(
    architecture: str, cfg: ConfigDict, resolution: int
) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """``(g_params, masked, mask) -> completed`` (``X*(1-M) + G*M``) of a trained
  completion network: its architecture and config section (its artefact's)."""
  if architecture == "deepfill":
    gen = generator_from_config(cfg)

    def f(g_params: Any, x: jax.Array, m: jax.Array) -> jax.Array:
      return complete(x, m, gen.apply({"params": g_params}, x, m).refined)

    return f
  if architecture == "gfc":
    return gfc_fns(cfg, resolution).complete
  if architecture == "idgan":
    return idgan_fns(cfg, resolution).complete
  raise ValueError(f"completion architecture {architecture!r} is not one of {ARCHITECTURES}")


def complete_fn(
    cfg: ConfigDict, g_params: Any, architecture: str = "deepfill", resolution: int = 0
) -> CompleteFn:
  """Frozen generator: (masked, mask) -> completed faces ``X*(1-M) + G*M`` (Eq. 1)
  (``resolution``: GFC's and IDGAN's, their critics' size; DeepFill needs none)."""
  f = completion(architecture, cfg, resolution)
  return lambda x, m: f(g_params, x, m)


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
