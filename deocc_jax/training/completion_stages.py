"""Table 2's other completion methods as training stages, and the recognisers
retrained on each method's completions (paper Sec. 4.3, "Choice of completion
methods"; ``docs/completion_baselines.md``).

    deocclusion_gfc    GFC (Li et al. 2017): generator, global / local critics,
                       semantic parsing loss through a face parser
    deocclusion_idgan  IDGAN (Ge et al. 2020): generator, global / local critics,
                       identity preservation / diversity through the frozen teacher
    distill_hard_<g>, distill_soft_<g>, finetune_arcface_<g>
                       the students and the fine-tuned baseline retrained on the
                       completions of G stage 'deocclusion_<g>' (g: noca, gfc, idgan)

Both de-occlusion stages use the tested library
``models/completion_baselines.py`` (``runs/builders.gfc_fns`` / ``idgan_fns``
build it from the config section) and share the key and the batches of stage
'deocclusion' (seed offset 2, its batch stream: paired). One loop step = one
critic update then one generator update on the batch (both papers: 1:1), with
the key ``fold_in(state['rng'], state['step'])`` (the same key for both: GFC's
noise fill is the same in the two updates; IDGAN's generator ignores it).

GFC's parsing targets are the landmark-rasterised labels of the batch's clean
faces (``data.face_parsing.parsing_labels_jax``, in the jitted step;
``parsing_target='labels'``). Its parser is trained in the same loop: each step
first updates it (pixel cross-entropy on the clean faces and those labels,
its own optimizer), then the critic and the generator read it frozen
(``stop_gradient``); it is part of the stage's state (checkpointed, resumed),
not of the artefact. IDGAN's recogniser is the run's teacher
(``factories.load_teacher``), the step's frozen third argument (never in the
state or the checkpoint), identity target the clean face's embedding.

The retrained recognisers are the base stages' own plans run on a config whose
``generator`` field (``config.distillation.generator`` /
``config.finetune_arcface.generator``) names the other G stage; they keep the
base stage's seed offset and batch stream (paired: the same initialisation,
the same faces and occluders; only the completion differs).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.data.face_parsing import parsing_labels_jax
from deocc_jax.models.face_parser import parsing_step
from deocc_jax.runs import builders, kinds, trained_models
from deocc_jax.runs.factories import data_facts, load_teacher
from deocc_jax.training import baseline_stages, stages
from deocc_jax.training.optim import make_optimizer
from deocc_jax.training.stage_spec import Plan, StageSpec, resolved

State = dict[str, Any]
GAN_KEYS = ("masked", "mask", "clean")
GFC_KEYS = (*GAN_KEYS, "landmarks")
IDGAN_KEYS = (*GAN_KEYS, "identity")


def _optimizers(c: ConfigDict) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  n = int(c.num_steps)
  return make_optimizer(c.g_optimizer, n), make_optimizer(c.d_optimizer, n)


def _step_key(state: State) -> jax.Array:
  """The step's key: ``fold_in`` of the stage key kept in the state and the step."""
  return jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])


def _gan_state(fns, key: jax.Array) -> State:
  """The library's state less its 'frozen' slot, plus the stage's key."""
  k_gan, k_rng = jax.random.split(key)
  state = {k: v for k, v in fns.init(k_gan, None).items() if k != "frozen"}
  return {**state, "rng": jax.random.key_data(k_rng)}


def _critic_then_generator(fns, state: State, batch: dict, frozen: Any, key: jax.Array):
  """One critic update, then one generator update (the library's steps; the
  frozen network sits in its 'frozen' slot during the step only)."""
  rest = {k: v for k, v in state.items() if k != "rng"}
  full, d_metrics = fns.critic_step({**rest, "frozen": frozen}, batch, key)
  full, g_metrics = fns.generator_step(full, batch, key)
  new = {k: v for k, v in full.items() if k != "frozen"}
  return {**new, "rng": state["rng"]}, {**d_metrics, **g_metrics}


# -------------------------------------------------------------------- GFC


def gfc_fns(c: ConfigDict, resolution: int):
  """(init_fn(key), step_fn(state, batch), the library's CompletionFns) of
  stage 'deocclusion_gfc'; batches need 'masked', 'mask', 'clean',
  'landmarks' (five points)."""
  g_tx, d_tx = _optimizers(c)
  fns = builders.gfc_fns(c, resolution, g_tx, d_tx)
  parser = builders.gfc_parser(c)
  p_tx = make_optimizer(c.parser_optimizer, int(c.num_steps))

  def init_fn(key: jax.Array) -> State:
    k_gan, k_parser = jax.random.split(key)
    p = parser.init(k_parser, jnp.zeros((1, resolution, resolution, 3)))["params"]
    return {**_gan_state(fns, k_gan), "parser": p, "parser_opt": p_tx.init(p)}

  def step_fn(state: State, batch: dict) -> tuple[State, dict]:
    y = batch["clean"]
    labels = parsing_labels_jax(batch["landmarks"], y.shape[1], y.shape[2])
    p, p_opt, p_metrics = parsing_step(
        parser, p_tx, state["parser"], state["parser_opt"], y, labels
    )
    gan = {k: v for k, v in state.items() if k not in ("parser", "parser_opt")}
    new, metrics = _critic_then_generator(
        fns, gan, {**batch, "parsing": labels}, p, _step_key(state)
    )
    metrics.update({f"parser/{k}": v for k, v in p_metrics.items()})
    return {**new, "parser": p, "parser_opt": p_opt}, metrics

  return init_fn, step_fn, fns


def gfc_plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
  c = resolved(config, require(config, "deocclusion_gfc"), source)
  res = int(config.data.resolution)
  init_fn, step_fn, _ = gfc_fns(c, res)
  spec = trained_models.generator_spec(c, res, data_facts(config, workdir), "gfc")
  return Plan(c, init_fn, step_fn, spec)


# ------------------------------------------------------------------ IDGAN


def idgan_fns(c: ConfigDict, resolution: int, embed):
  """(init_fn(key), step_fn(state, batch, recogniser params), CompletionFns)
  of stage 'deocclusion_idgan'; ``embed(params, images) -> (B, D)`` is the
  frozen recogniser. Batches need 'masked', 'mask', 'clean', 'identity'."""
  g_tx, d_tx = _optimizers(c)
  fns = builders.idgan_fns(c, resolution, embed, g_tx, d_tx)

  def init_fn(key: jax.Array) -> State:
    return _gan_state(fns, key)

  def step_fn(state: State, batch: dict, frozen: Any) -> tuple[State, dict]:
    return _critic_then_generator(fns, state, batch, frozen, _step_key(state))

  return init_fn, step_fn, fns


def idgan_plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
  c = resolved(config, require(config, "deocclusion_idgan"), source)
  res = int(config.data.resolution)
  teacher = load_teacher(config, workdir)
  embed = lambda p, x: teacher.apply(p, x)["embedding"]  # noqa: E731
  init_fn, step_fn, _ = idgan_fns(c, res, embed)
  spec = trained_models.generator_spec(c, res, data_facts(config, workdir), "idgan")
  return Plan(c, init_fn, step_fn, spec, frozen=teacher.params)


# Paired with 'deocclusion' (and 'deocclusion_noca'): its key and its batches.
DEOCCLUSION_GFC = StageSpec("deocclusion_gfc", 2, GFC_KEYS, gfc_plan, stream="deocclusion")
DEOCCLUSION_IDGAN = StageSpec("deocclusion_idgan", 2, IDGAN_KEYS, idgan_plan, stream="deocclusion")


# ------------------------------------- recognisers retrained per completion


def on_completion(base: StageSpec, generator: str) -> StageSpec:
  """``base`` (a key of ``kinds.RETRAINED``) retrained on the completions of
  de-occlusion stage ``generator``: its plan on a config whose section's
  ``generator`` field names it; the base stage's seed offset and batches."""
  section = kinds.RETRAINED[base.name]

  def plan(config: ConfigDict, workdir: str, source: Any, mesh: Any) -> Plan:
    c = config.copy_and_resolve_references()
    c[section].generator = generator
    return base.plan(c, workdir, source, mesh)

  return StageSpec(
      kinds.on_completion(base.name, generator),
      base.seed_offset,
      base.batch_keys,
      plan,
      base.source,
      stream=base.stream or base.name,
  )


BASES = (stages.DISTILL_HARD, stages.DISTILL_SOFT, baseline_stages.FINETUNE_ARCFACE)
RETRAINED: tuple[StageSpec, ...] = tuple(
    on_completion(base, g) for g in kinds.COMPLETIONS if g != "deocclusion" for base in BASES
)
