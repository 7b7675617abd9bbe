"""The jitted steps of ``configs/paper_celeba.py``, built as its stage runners build them.

Shared by ``benchmarks/scale_model.py`` (XLA cost and memory analysis of the
compiled steps, on any backend) and ``benchmarks/gpu_paper_sizes.py`` (the
same steps timed on an accelerator). Each stage's step is its stage module's
own ``make_fns`` on the paper config's section, schedules resolved over
CelebA's training split as ``training/stages.py`` does:

  teacher_embeddings  the converted VGGFace2 ResNet-50 embedding the clean faces
  deocclusion         DeepFill-v1 G (cnum 32) + global / local critics (cnum 64),
                      WGAN-GP, 5 critic updates per G update, DeepFill's L1 terms
  deocclusion_noca    the same without contextual attention
  segmentation        the occlusion segmenter (width 32), BCE + Dice
  distill_hard/soft   frozen G completes, the frozen ResNet-50 teacher embeds the
                      clean face (its 8,631 VGGFace2 logits for L_CE), the
                      ResNet-18 student trains on Eq. 16 (soft: + Eq. 18 centroids)
  finetune_arcface    the ResNet-50 teacher fine-tuned with ArcFace on G's completions

The converted teacher is built exactly as ``teachers/api.converted_teacher``
builds it from a converted directory (fp32 module, resize to 224, BGR minus the
Caffe mean), with random weights: no weights are read. The stages
``evaluate`` and ``ablation`` have no step of their own (:data:`NOT_STEPS`).

Steps are per device: the per-device batch is the variant's global batch over
its devices, the step compiled for one device (data parallelism adds the
gradient all-reduce, no FLOPs to speak of; ``tpu_pod``'s FSDP would shard the
parameters and optimizer state, which a one-device compile does not model).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from ml_collections import ConfigDict

from deocc_jax.configs import paper
from deocc_jax.conversion import checkpoint as ckpt
from deocc_jax.runs import builders
from deocc_jax.teachers import api
from deocc_jax.training import (
    baseline_stages,
    deocclusion_stage,
    distillation_stage,
    finetune_stage,
    optim,
    segmentation_stage,
    stages,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(ROOT, "configs", "paper_celeba.py")
STAGES = (
    "teacher_embeddings",
    "deocclusion",
    "deocclusion_noca",
    "segmentation",
    "distill_hard",
    "distill_soft",
    "finetune_arcface",
)
NOT_STEPS = {
    "evaluate": "inference over the held-out faces (G and the recognisers forward), no training step",
    "ablation": "one distillation run per loss setting: the distill_hard / distill_soft step",
}
# CelebA's training split under the paper config: identities less the 1,000 held out.
CELEBA_TRAIN_IDENTITIES = 10_177 - 1_000
TEACHER_ARCH = "vggface2_resnet50"
# Sections that size each stage's global batch.
BATCH_SECTION = {
    "teacher_embeddings": "teacher_embeddings",
    "deocclusion": "deocclusion",
    "deocclusion_noca": "deocclusion",
    "segmentation": "segmentation",
    "distill_hard": "distillation",
    "distill_soft": "distillation",
    "finetune_arcface": "finetune_arcface",
}


def paper_config(variant: str = "") -> ConfigDict:
  """``configs/paper_celeba.py[:variant]``."""
  spec = importlib.util.spec_from_file_location("paper_celeba_config", CONFIG_FILE)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant or None)


@dataclasses.dataclass(frozen=True)
class Step:
  """One stage's step: ``fn(state, batch, *frozen) -> (state, metrics)``.

  ``init(key)`` makes the state, ``frozen_init(key)`` the frozen models (a
  tuple, maybe empty), ``batch(rng)`` a host batch; ``abstract()`` gives all
  three as ``jax.ShapeDtypeStruct`` trees without computing anything.
  ``critic_update`` (de-occlusion only): ``(fn, args)`` of ONE critic update,
  whose FLOPs XLA's cost analysis counts once inside the step's ``lax.scan``
  of ``n_critic`` updates (a while loop; its trip count is not multiplied in).
  """

  stage: str
  px: int
  batch_size: int
  dtype: str  # compute dtype of the trained model ('float32' | 'bfloat16')
  fn: Callable
  init: Callable[[jax.Array], Any]
  frozen_init: Callable[[jax.Array], tuple]
  batch: Callable[[np.random.Generator], dict[str, np.ndarray]]
  n_critic: int = 1
  critic_update: Callable[[], tuple[Callable, tuple]] | None = None

  def abstract(self) -> tuple[Any, dict, tuple]:
    key = jax.random.key(0)
    state = jax.eval_shape(self.init, key)
    frozen = jax.eval_shape(self.frozen_init, key)
    batch = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype)
        for k, v in self.batch(np.random.default_rng(0)).items()
    }
    return state, batch, tuple(frozen)


def per_device_batch(config: ConfigDict, stage: str, devices: int) -> int:
  """The stage's global batch (its config section's) over ``devices``."""
  b = int(config[BATCH_SECTION[stage]].batch_size)
  if b % devices:
    raise ValueError(f"{stage}: global batch {b} does not split over {devices} devices")
  return b // devices


def _faces(rng: np.random.Generator, b: int, px: int, keys: tuple[str, ...]) -> dict:
  """Random faces in [-1, 1] with a central rectangular hole, identities."""
  mask = np.zeros((b, px, px, 1), np.float32)
  mask[:, 3 * px // 8 : 3 * px // 4, px // 4 : 3 * px // 4] = 1
  out = {
      "masked": rng.uniform(-1, 1, (b, px, px, 3)).astype(np.float32),
      "mask": mask,
      "clean": rng.uniform(-1, 1, (b, px, px, 3)).astype(np.float32),
      "identity": rng.integers(0, CELEBA_TRAIN_IDENTITIES, b).astype(np.int32),
  }
  return {k: out[k] for k in keys}


def _resolve(section: ConfigDict) -> ConfigDict:
  """The section's schedule in steps over CelebA's training split (as the runner)."""
  return optim.resolve_schedule(section, paper.CELEBA_TRAIN_IMAGES_APPROX)


def converted_teacher() -> api.Teacher:
  """The VGGFace2 ResNet-50 as ``api.converted_teacher`` rebuilds it (fp32,
  8,631 logits); its ``params`` are abstract (shapes only): the steps take the
  teacher's variables as an argument (:func:`_teacher_params` makes them)."""
  spec = ckpt.teacher_spec(TEACHER_ARCH)
  module = spec.build(spec.default_num_classes, jnp.float32)
  meta = ckpt.build_metadata(
      TEACHER_ARCH,
      num_classes=spec.default_num_classes,
      source_file="random-weights",
      source_sha256="",
      source_format="none",
  )
  size = int(meta["input_size"][0])
  variables = ckpt.abstract_variables(module, spec.input_size)

  def apply(params, images):  # teachers/api.py converted_teacher's apply
    x = (api.resize_to(images, size) + 1.0) * 127.5
    out = module.apply(params, ckpt.preprocess_from_metadata(meta, x))
    return {"embedding": api.l2_normalized(out["embedding"]), "logits": out["logits"]}

  return api.Teacher(
      TEACHER_ARCH, variables, apply, spec.embedding_size, size, meta, spec.default_num_classes
  )


def _generator_params(deocc: ConfigDict, px: int) -> Callable[[jax.Array], Any]:
  init, _ = deocclusion_stage.make_fns(_resolve(deocc), px)
  return lambda key: init(key)["g"]


def _teacher_params(key: jax.Array) -> Any:
  """Random variables of the converted teacher's module (traceable)."""
  spec = ckpt.teacher_spec(TEACHER_ARCH)
  module = spec.build(spec.default_num_classes, jnp.float32)
  h, w = spec.input_size
  return module.init(key, jnp.zeros((1, h, w, 3)))


def build_step(config: ConfigDict, stage: str, px: int, batch_size: int) -> Step:
  """``stage``'s step at ``px`` and per-device ``batch_size`` (see module doc)."""
  teacher = converted_teacher()  # abstract params: apply only
  deocc = config.deocclusion
  gen_init = _generator_params(deocc, px)
  tinit = _teacher_params
  keys = ("masked", "mask", "clean", "identity")
  faces = lambda ks: lambda rng: _faces(rng, batch_size, px, ks)  # noqa: E731
  common = dict(stage=stage, px=px, batch_size=batch_size)

  if stage == "teacher_embeddings":

    def fn(state, batch, tp):  # training/stages.run_teacher_embeddings' extraction
      return state, teacher.apply(tp, batch["clean"])["embedding"]

    return Step(
        **common,
        dtype="float32",
        fn=fn,
        init=lambda key: {},
        frozen_init=lambda key: (tinit(key),),
        batch=faces(("clean",)),
    )

  if stage in stages.DEOCCLUSION_STAGES:
    c = _resolve(stages.deocclusion_section(config, stage))
    init, fn = deocclusion_stage.make_fns(c, px)

    def critic_update():
      one = c.copy_and_resolve_references()
      with one.unlocked():
        one.n_critic = 1
      parts = deocclusion_stage.GanParts(one, px)
      st = jax.eval_shape(init, jax.random.key(0))
      img = jax.ShapeDtypeStruct((batch_size, px, px, 3), jnp.float32)
      m = jax.ShapeDtypeStruct((batch_size, px, px, 1), jnp.float32)
      key = jax.eval_shape(lambda: jax.random.key(0))
      f = lambda dp, d_opt, y, fake, m, k: parts.critic_updates(dp, d_opt, y, fake, m, k)[:2]  # noqa: E731
      return f, (st["d"], st["d_opt"], img, img, m, key)

    return Step(
        **common,
        dtype=str(c.dtype),
        fn=fn,
        init=init,
        frozen_init=lambda key: (),
        batch=faces(("masked", "mask", "clean")),
        n_critic=int(c.n_critic),
        critic_update=critic_update,
    )

  if stage == "segmentation":
    c = _resolve(config.segmentation)
    init, fn = segmentation_stage.make_fns(c, px)
    return Step(
        **common,
        dtype=str(c.dtype),
        fn=fn,
        init=init,
        frozen_init=lambda key: (),
        batch=faces(("masked", "mask")),
    )

  if stage in ("distill_hard", "distill_soft"):
    c = config.distillation.copy_and_resolve_references()
    with c.unlocked():
      c.instance = stage[len("distill_") :]
    c = _resolve(c)
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    init, fn = distillation_stage.make_fns(
        c,
        deocc,
        teacher.apply,
        teacher.embed_dim,
        CELEBA_TRAIN_IDENTITIES,
        px,
        mesh,
        teacher_num_classes=teacher.num_classes,
        teacher_name=f"teacher '{TEACHER_ARCH}'",
    )

    def frozen_init(key):
      kt, kg, kc = jax.random.split(key, 3)
      fz = {"teacher": tinit(kt), "generator": gen_init(kg)}
      if c.instance == "soft":
        cen = jax.random.normal(kc, (CELEBA_TRAIN_IDENTITIES, teacher.embed_dim))
        fz["centroids"] = cen / jnp.linalg.norm(cen, axis=-1, keepdims=True)
      return (fz,)

    return Step(
        **common,
        dtype=str(c.dtype),
        fn=fn,
        init=init,
        frozen_init=frozen_init,
        batch=faces(keys),
    )

  if stage == "finetune_arcface":  # training/baseline_stages.finetune_fns, kind 'converted'
    cfg = _resolve(baseline_stages.finetune_section(config.finetune_arcface, None))
    if str(config.finetune_arcface.input) != "completed":
      raise ValueError("finetune_arcface: the scale model follows input='completed'")

    def input_fn(fz, batch):
      complete = builders.complete_fn(deocc, fz["generator"])
      return complete(batch["masked"], batch["mask"])

    def make(tp):
      return finetune_stage.make_fns(
          cfg,
          dataclasses.replace(teacher, params=tp),
          CELEBA_TRAIN_IDENTITIES,
          input_fn,
      )

    _, fn = make(teacher.params)

    def init(key):
      kt, kh = jax.random.split(key)
      return make(tinit(kt))[0](kh)

    return Step(
        **common,
        dtype="float32",  # the converted teacher's module computes in fp32
        fn=fn,
        init=init,
        frozen_init=lambda key: ({"generator": gen_init(key)},),
        batch=faces(keys),
    )
  raise ValueError(f"unknown stage {stage!r}; choose from {STAGES}")


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0]
  return dict(cost or {})


def compile_step(step: Step):
  """The step jitted as the loop jits it (state donated), compiled for the
  abstract arguments: nothing runs, nothing is allocated."""
  state, batch, frozen = step.abstract()
  return jax.jit(step.fn, donate_argnums=(0,)).lower(state, batch, *frozen).compile()


_CRITIC_FLOPS: dict[tuple, float] = {}


def analyse(step: Step, compiled: Any = None) -> dict[str, Any]:
  """FLOPs and memory of the compiled step (XLA's cost / memory analysis).

  ``flops``: the cost analysis' count, plus ``n_critic - 1`` times the FLOPs
  of one critic update compiled alone, because the count takes the body of
  the critic ``lax.scan`` once (checked: the count is below ``n_critic``
  critic updates alone). ``device_memory_bytes``: arguments + outputs
  - aliased (donated) + temporaries of the compiled program. ``compiled``:
  the step already compiled (default: :func:`compile_step`).
  """
  compiled = compile_step(step) if compiled is None else compiled
  cost = _cost(compiled)
  counted = float(cost.get("flops", 0.0))
  out: dict[str, Any] = {"flops_counted": counted, "flops": counted}
  if step.critic_update is not None and step.n_critic > 1:
    key = (step.px, step.batch_size, step.dtype)  # the same critics with or without CA
    if key not in _CRITIC_FLOPS:
      f, args = step.critic_update()
      _CRITIC_FLOPS[key] = float(_cost(jax.jit(f).lower(*args).compile()).get("flops", 0.0))
    one = _CRITIC_FLOPS[key]
    out["critic_update_flops"] = one
    # A count below n_critic updates alone shows the scan body counted once
    # (XLA as of jax 0.10); should a later XLA multiply the trip count in, the
    # count stands as it is.
    out["critic_scan_counted_once"] = counted < step.n_critic * one
    if out["critic_scan_counted_once"]:
      out["flops"] = counted + (step.n_critic - 1) * one
  out["bytes_accessed"] = float(cost.get("bytes accessed", 0.0))
  mem = compiled.memory_analysis()
  fields = ("argument", "output", "alias", "temp", "generated_code")
  for name in fields:
    out[f"{name}_bytes"] = int(getattr(mem, f"{name}_size_in_bytes", 0) or 0) if mem else 0
  out["device_memory_bytes"] = (
      out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"] + out["temp_bytes"]
  )
  return out
