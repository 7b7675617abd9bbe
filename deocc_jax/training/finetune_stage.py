"""The fine-tuned-recogniser baseline of Table 2 for a pretrained teacher.

The paper fine-tunes a pretrained recogniser on completed faces ("Distillation
vs Fine-tune", Sec. 4.4). For a teacher that is not trained here (a converted
VGGFace2 network), the teacher's own network is fine-tuned: its ``params``
collection is trained, its other collections (BatchNorm running statistics)
stay fixed (the converted networks run BatchNorm in inference mode), and a new
ArcFace head over the training identities (Deng et al. 2019) sits on its
embedding. The images come from ``input_fn(frozen, batch)`` (G's completions).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from deocc_jax.losses.arcface import ArcFaceHead, arcface_loss
from deocc_jax.training.optim import make_optimizer

State = dict[str, Any]


def _split(variables: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
  if "params" not in variables:
    raise ValueError(
        f"the teacher's variables have no 'params' collection "
        f"(collections: {sorted(variables)})"
    )
  return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def make_fns(
    cfg: ConfigDict,
    teacher: Any,
    num_classes: int,
    input_fn: Callable[[Any, dict], jax.Array],
) -> tuple[Callable[[jax.Array], State], Callable[[State, dict], tuple[State, dict]]]:
  """(init_fn, step_fn) fine-tuning ``teacher`` (an ``api.Teacher``) with ArcFace.

  ``cfg``: optimizer / schedule fields, ``num_steps``, ``arcface_scale``,
  ``arcface_margin``. Batches need 'identity' and what ``input_fn`` reads;
  ``step_fn(state, batch, frozen)`` passes ``frozen`` (e.g. G's parameters: a
  jit argument, not state) to ``input_fn(frozen, batch)``.
  """
  params, fixed = _split(teacher.params)
  head = ArcFaceHead(num_classes=num_classes)
  tx = make_optimizer(cfg, int(cfg.num_steps))
  scale, margin = float(cfg.arcface_scale), float(cfg.arcface_margin)
  apply = teacher.apply

  def init_fn(key: jax.Array) -> State:
    hv = head.init(key, jnp.zeros((1, int(teacher.embed_dim))))
    p = {"backbone": params, "head": hv["params"]}
    return {"params": p, "fixed": fixed, "opt": tx.init(p), "step": jnp.zeros((), jnp.int32)}

  def step_fn(state: State, batch: dict, frozen: Any = None) -> tuple[State, dict]:
    images = jax.lax.stop_gradient(input_fn(frozen, batch))

    def loss_fn(p):
      emb = apply({**state["fixed"], "params": p["backbone"]}, images)["embedding"]
      cos = head.apply({"params": p["head"]}, emb)
      return arcface_loss(cos, batch["identity"], scale, margin), cos

    (loss, cos), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    new = {
        **state,
        "params": optax.apply_updates(state["params"], updates),
        "opt": opt,
        "step": state["step"] + 1,
    }
    acc = jnp.mean(jnp.argmax(cos, -1) == batch["identity"])
    return new, {
        "loss/arcface": loss,
        "train/accuracy": acc,
        "grad_norm/backbone": optax.tree.norm(grads["backbone"]),
        "grad_norm/head": optax.tree.norm(grads["head"]),
    }

  return init_fn, step_fn
