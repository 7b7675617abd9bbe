"""Stage 0: ArcFace pre-training of the teacher on clean faces.

The embedded synthetic default has no pretrained recogniser (no real teacher
has seen those faces), so its teacher is trained here: a ResNet-18 backbone
with an embedding layer and an ArcFace head (additive angular margin) on the
clean training faces. The same stage fine-tunes "ArcFace" baselines.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from deocc_jax.losses.arcface import ArcFaceHead, arcface_loss
from deocc_jax.runs.builders import teacher_backbone
from deocc_jax.training.optim import make_optimizer

State = dict[str, Any]


def make_fns(
    cfg: ConfigDict,
    num_classes: int,
    resolution: int,
    init_from: State | None = None,
    input_fn: Callable[[Any, dict], jax.Array] | None = None,
) -> tuple[Callable[[jax.Array], State], Callable[[State, dict], tuple[State, dict]]]:
  """(init_fn, step_fn) of ArcFace training; batches need 'clean', 'identity'.

  Fine-tuning: ``init_from`` (a trained state's 'params' / 'batch_stats')
  replaces the random init (without 'head': a new head over
  ``num_classes``); ``input_fn(frozen, batch)`` gives the training images
  (default ``batch['clean']``) from ``step_fn(state, batch, frozen)``'s frozen
  models (e.g. the generator's parameters: a jit argument, not state).
  """
  backbone = teacher_backbone(cfg)
  head = ArcFaceHead(num_classes=num_classes)
  tx = make_optimizer(cfg, int(cfg.num_steps))
  scale, margin = float(cfg.arcface_scale), float(cfg.arcface_margin)

  def init_fn(key: jax.Array) -> State:
    if init_from is not None:
      params, stats = dict(init_from["params"]), init_from["batch_stats"]
      if "head" not in params:  # fine-tuning on other identities: a new ArcFace head
        params["head"] = head.init(key, jnp.zeros((1, int(cfg.embed_dim))))["params"]
    else:
      kb, kh = jax.random.split(key)
      v = backbone.init(kb, jnp.zeros((1, resolution, resolution, 3)), train=False)
      hv = head.init(kh, jnp.zeros((1, int(cfg.embed_dim))))
      params, stats = {"backbone": v["params"], "head": hv["params"]}, v["batch_stats"]
    state = {
        "params": params,
        "batch_stats": stats,
        "opt": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
    }
    return state

  def step_fn(state: State, batch: dict, frozen: Any = None) -> tuple[State, dict]:
    images = batch["clean"] if input_fn is None else jax.lax.stop_gradient(input_fn(frozen, batch))

    def loss_fn(p):
      out, upd = backbone.apply(
          {"params": p["backbone"], "batch_stats": state["batch_stats"]},
          images,
          train=True,
          mutable=["batch_stats"],
      )
      cos = head.apply({"params": p["head"]}, out["embedding"])
      loss = arcface_loss(cos, batch["identity"], scale, margin)
      return loss, (upd["batch_stats"], cos)

    (loss, (stats, cos)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    acc = jnp.mean(jnp.argmax(cos, -1) == batch["identity"])
    new = {"params": params, "batch_stats": stats, "opt": opt, "step": state["step"] + 1}
    return new, {
        "loss/arcface": loss,
        "train/accuracy": acc,
        "grad_norm/backbone": optax.tree.norm(grads["backbone"]),
        "grad_norm/head": optax.tree.norm(grads["head"]),
    }

  return init_fn, step_fn
