"""Pure step builders for the two alternative completion generators (host paper Tab. 2).

:func:`make_gfc_fns` (GFC, Li et al. CVPR 2017) and :func:`make_idgan_fns`
(IDGAN, Ge et al. TCSVT 2020) mirror
``deocc_jax.training.deocclusion_stage.make_fns``: every function is pure in
an explicit state pytree and takes an explicit PRNG key. Each returns a
:class:`CompletionFns`:

* ``init(key, frozen_params) -> state``, with ``state = {'g', 'd', 'g_opt',
  'd_opt', 'frozen', 'step'}``; ``frozen`` holds the frozen auxiliary
  network's parameters (GFC: the face parser; IDGAN: the recogniser), never
  updated (read through ``jax.lax.stop_gradient``);
* ``critic_step(state, batch, key) -> (state, metrics)``: one update of the
  global and local critics (the project's
  :class:`~deocc_jax.models.critics.GlobalLocalCritics`, local patch = the
  hole's bounding box resized to ``local_size``) on real clean faces vs. the
  current generator's completions, log-loss GAN;
* ``generator_step(state, batch, key) -> (state, metrics)``: one generator
  update on the method's objective (:mod:`deocc_jax.losses.gfc`,
  :mod:`deocc_jax.losses.idgan`); increments ``step``;
* ``complete(g_params, masked, mask) -> completed`` (``X*(1-M) + G*M``).

A training stage alternates the two steps (both papers: one critic update
per generator update) and jits them. Batches need ``'masked'``, ``'mask'``,
``'clean'`` (as the de-occlusion stage); GFC also ``'parsing'`` (B, H, W) int
labels of the clean face unless ``parsing_target='parser'`` (a stage builds
them from the batch's ``'landmarks'`` with
``deocc_jax.data.face_parsing.parsing_labels_jax`` inside its jitted step;
``models`` may not import ``data``, which reaches ``models`` through
``detection`` and ``conversion``: no subpackage cycle); IDGAN ``'identity'``
(B,) and, with ``identity_target='center'``, ``'identity_center'`` (B, D).
Keys: GFC draws its hole noise from them (one fill per step; the critic step
and the generator step of an iteration may share a key to see the same
completions); IDGAN's generator is deterministic and ignores them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from deocc_jax.losses import gfc as gfc_losses
from deocc_jax.losses import idgan as idgan_losses
from deocc_jax.models.critics import GlobalLocalCritics, crop_hole_boxes
from deocc_jax.models.face_parser import FaceParser
from deocc_jax.models.generator import complete
from deocc_jax.models.gfc import GFCGenerator, noise_fill
from deocc_jax.models.idgan import IDGANGenerator

State = dict[str, Any]
Batch = dict[str, jax.Array]
StepFn = Callable[[State, Batch, jax.Array], tuple[State, dict[str, jax.Array]]]
PARSING_TARGETS = ("labels", "parser")
IDENTITY_TARGETS = ("clean", "center")


class CompletionFns(NamedTuple):
  """What :func:`make_gfc_fns` / :func:`make_idgan_fns` return (module docstring)."""

  init: Callable[[jax.Array, Any], State]
  generator_step: StepFn
  critic_step: StepFn
  complete: Callable[[Any, jax.Array, jax.Array], jax.Array]


class _Gan:
  """Shared pieces: critics, the critic step and the generator update."""

  def __init__(self, resolution: int, local_size: int | None, critic_cnum: int, g_tx, d_tx):
    if resolution < 8:
      raise ValueError(f"resolution must be >= 8, got {resolution}")
    self.resolution = int(resolution)
    self.local = int(local_size) if local_size is not None else max(self.resolution // 2, 8)
    self.critics = GlobalLocalCritics(cnum=int(critic_cnum))
    self.g_tx, self.d_tx = g_tx, d_tx

  def init(self, key: jax.Array, gen_init: Callable[[jax.Array], Any], frozen: Any) -> State:
    kg, kd = jax.random.split(key)
    r = self.resolution
    gp = gen_init(kg)
    dp = self.critics.init(kd, jnp.zeros((1, r, r, 3)), jnp.zeros((1, self.local, self.local, 3)))[
        "params"
    ]
    return {
        "g": gp,
        "d": dp,
        "g_opt": self.g_tx.init(gp),
        "d_opt": self.d_tx.init(dp),
        "frozen": frozen,
        "step": jnp.zeros((), jnp.int32),
    }

  def scores(self, dp: Any, images: jax.Array, masks: jax.Array) -> tuple[jax.Array, jax.Array]:
    patches = crop_hole_boxes(images, masks, self.local)
    return self.critics.apply({"params": dp}, images, patches)

  def critic_step(self, state: State, clean: jax.Array, fake: jax.Array, m: jax.Array):
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(dp):
      rg, rl = self.scores(dp, clean, m)
      fg, fl = self.scores(dp, fake, m)
      return gfc_losses.gfc_critic_loss(rg, fg, rl, fl)

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["d"])
    upd, d_opt = self.d_tx.update(grads, state["d_opt"], state["d"])
    new = {**state, "d": optax.apply_updates(state["d"], upd), "d_opt": d_opt}
    metrics = {f"loss/d_{k}": v for k, v in terms.items()}
    return new, {**metrics, "grad_norm/d": optax.tree.norm(grads)}

  def generator_update(self, state: State, loss_fn: Callable[[Any], Any]):
    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["g"])
    upd, g_opt = self.g_tx.update(grads, state["g_opt"], state["g"])
    new = {
        **state,
        "g": optax.apply_updates(state["g"], upd),
        "g_opt": g_opt,
        "step": state["step"] + 1,
    }
    metrics = {f"loss/g_{k}": v for k, v in terms.items()}
    return new, {**metrics, "grad_norm/g": optax.tree.norm(grads)}


def _hole_l1(completed: jax.Array, clean: jax.Array, m: jax.Array) -> jax.Array:
  return jnp.sum(jnp.abs(completed - clean) * m) / jnp.maximum(jnp.sum(m) * 3, 1.0)


def make_gfc_fns(
    resolution: int,
    g_tx: optax.GradientTransformation,
    d_tx: optax.GradientTransformation,
    *,
    base: int = 32,
    fc_dim: int | None = None,
    critic_cnum: int = 64,
    local_size: int | None = None,
    weights: gfc_losses.GFCWeights = gfc_losses.GFCWeights(),
    parser: FaceParser | None = None,
    parsing_target: str = "labels",
    use_noise_fill: bool = True,
) -> CompletionFns:
  """GFC's generator, critics and objective (``losses/gfc.py``) as pure steps.

  ``init(key, parser_params)`` takes the frozen parser's parameters (a
  :class:`~deocc_jax.models.face_parser.FaceParser`, pretrained with
  ``face_parser.parsing_step``). ``parsing_target`` chooses the clean face's
  parsing labels: ``'labels'`` reads ``batch['parsing']`` (e.g. the
  landmark-rasterised labels of ``data.face_parsing``), ``'parser'`` takes the
  frozen parser's argmax on the clean face (what GFC's release does, having no
  labels for CelebA). ``use_noise_fill`` fills the hole with uniform noise as
  GFC does (else zeros). ``local_size`` defaults to half the resolution
  (GFC: 64 px patches of 128 px faces).
  """
  if parsing_target not in PARSING_TARGETS:
    raise ValueError(f"parsing_target must be one of {PARSING_TARGETS}, got {parsing_target!r}")
  gan = _Gan(resolution, local_size, critic_cnum, g_tx, d_tx)
  gen = GFCGenerator(base=int(base), fc_dim=fc_dim)
  parser = parser if parser is not None else FaceParser()
  r = gan.resolution

  def gen_init(key: jax.Array) -> Any:
    x = jnp.zeros((1, r, r, 3))
    m = jnp.zeros((1, r, r, 1)).at[:, r // 4 : r // 2, r // 4 : r // 2].set(1)
    return gen.init(key, x, m)["params"]

  def forward(gp: Any, x: jax.Array, m: jax.Array, key: jax.Array) -> jax.Array:
    fill = noise_fill(key, x) if use_noise_fill else None
    return gen.apply({"params": gp}, x, m, fill)

  def targets(batch: Batch, frozen: Any) -> jax.Array:
    if parsing_target == "labels":
      return batch["parsing"].astype(jnp.int32)
    logits = parser.apply({"params": frozen}, batch["clean"])
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def critic_step(state: State, batch: Batch, key: jax.Array):
    x, m, y = batch["masked"], batch["mask"], batch["clean"]
    fake = complete(x, m, forward(state["g"], x, m, key))
    return gan.critic_step(state, y, fake, m)

  def generator_step(state: State, batch: Batch, key: jax.Array):
    x, m, y = batch["masked"], batch["mask"], batch["clean"]
    frozen = jax.lax.stop_gradient(state["frozen"])
    labels = jax.lax.stop_gradient(targets(batch, frozen))

    def loss_fn(gp):
      out = forward(gp, x, m, key)
      comp = complete(x, m, out)
      sg, sl = gan.scores(state["d"], comp, m)
      logits = parser.apply({"params": frozen}, comp)
      total, terms = gfc_losses.gfc_generator_loss(out, y, sg, sl, logits, labels, weights)
      return total, {**terms, "hole_l1": _hole_l1(comp, y, m)}

    new, metrics = gan.generator_update(state, loss_fn)
    metrics["metric/hole_l1"] = metrics.pop("loss/g_hole_l1")
    return new, metrics

  def complete_fn(g_params: Any, x: jax.Array, m: jax.Array) -> jax.Array:
    """Deterministic completion (zero fill unless ``use_noise_fill``: then a fixed key)."""
    return complete(x, m, forward(g_params, x, m, jax.random.PRNGKey(0)))

  return CompletionFns(
      init=lambda key, parser_params: gan.init(key, gen_init, parser_params),
      generator_step=generator_step,
      critic_step=critic_step,
      complete=complete_fn,
  )


def make_idgan_fns(
    resolution: int,
    g_tx: optax.GradientTransformation,
    d_tx: optax.GradientTransformation,
    embed: Callable[[Any, jax.Array], jax.Array],
    *,
    base: int = 64,
    critic_cnum: int = 64,
    local_size: int | None = None,
    weights: idgan_losses.IDGANWeights = idgan_losses.IDGANWeights(),
    identity_target: str = "clean",
) -> CompletionFns:
  """IDGAN-style generator, critics and identity-diversity objective as pure steps.

  ``embed(params, images) -> (B, D)`` is the frozen recogniser (any function
  of its parameters and (B, H, W, 3) images in [-1, 1]); ``init(key,
  recognizer_params)`` stores its parameters in ``state['frozen']``. The
  identity-preservation target is the clean face's embedding
  (``identity_target='clean'``) or ``batch['identity_center']``
  (``'center'``: IDGAN's identity-centred features, precomputed off-line).
  """
  if identity_target not in IDENTITY_TARGETS:
    raise ValueError(f"identity_target must be one of {IDENTITY_TARGETS}, got {identity_target!r}")
  gan = _Gan(resolution, local_size, critic_cnum, g_tx, d_tx)
  gen = IDGANGenerator(base=int(base))
  r = gan.resolution

  def gen_init(key: jax.Array) -> Any:
    return gen.init(key, jnp.zeros((1, r, r, 3)), jnp.zeros((1, r, r, 1)))["params"]

  def critic_step(state: State, batch: Batch, key: jax.Array):
    del key  # deterministic generator
    x, m, y = batch["masked"], batch["mask"], batch["clean"]
    fake = complete(x, m, gen.apply({"params": state["g"]}, x, m))
    return gan.critic_step(state, y, fake, m)

  def generator_step(state: State, batch: Batch, key: jax.Array):
    del key  # deterministic generator
    x, m, y = batch["masked"], batch["mask"], batch["clean"]
    frozen = jax.lax.stop_gradient(state["frozen"])
    if identity_target == "clean":
      target = embed(frozen, y)
    else:
      target = batch["identity_center"]
    target = jax.lax.stop_gradient(target)
    labels = batch["identity"]

    def loss_fn(gp):
      out = gen.apply({"params": gp}, x, m)
      comp = complete(x, m, out)
      sg, sl = gan.scores(state["d"], comp, m)
      emb = embed(frozen, comp)
      total, terms = idgan_losses.idgan_generator_loss(out, y, sg, sl, emb, target, labels, weights)
      return total, {**terms, "hole_l1": _hole_l1(comp, y, m)}

    new, metrics = gan.generator_update(state, loss_fn)
    metrics["metric/hole_l1"] = metrics.pop("loss/g_hole_l1")
    return new, metrics

  def complete_fn(g_params: Any, x: jax.Array, m: jax.Array) -> jax.Array:
    return complete(x, m, gen.apply({"params": g_params}, x, m))

  return CompletionFns(
      init=lambda key, recognizer_params: gan.init(key, gen_init, recognizer_params),
      generator_step=generator_step,
      critic_step=critic_step,
      complete=complete_fn,
  )
