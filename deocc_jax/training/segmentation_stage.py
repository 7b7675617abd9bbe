"""Occlusion segmentation: training the blind-de-occlusion mask predictor.

``OcclusionSegmenter`` learns ``M`` from the masked face ``X`` with per-pixel
sigmoid binary cross-entropy, optionally plus ``dice_weight`` x soft Dice
loss (1 - 2|P.M| / (|P| + |M|) over the whole batch). Batches need 'masked'
and 'mask'.

Config (``ConfigDict``)::

    width: 16            # segmenter base width
    dtype: 'float32'
    num_steps: int       # for the LR schedule
    optimizer: ConfigDict(optimizer='adam', lr=1e-3, schedule='constant', ...)
    dice_weight: 0.0     # optional
    pos_weight: 1.0      # optional BCE weight of occluded pixels
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from deocc_jax.data.masks import CATEGORIES
from deocc_jax.runs.builders import segmenter_from_config
from deocc_jax.training.optim import make_optimizer

State = dict[str, Any]


def bce_loss(logits: jax.Array, target: jax.Array, pos_weight: float = 1.0) -> jax.Array:
  """Mean per-pixel sigmoid BCE (numerically stable), occluded pixels x ``pos_weight``."""
  logits = logits.astype(jnp.float32)
  target = target.astype(jnp.float32)
  per = optax.sigmoid_binary_cross_entropy(logits, target)
  w = 1.0 + (pos_weight - 1.0) * target
  return jnp.sum(w * per) / jnp.sum(w)


def soft_dice_loss(logits: jax.Array, target: jax.Array, eps: float = 1.0) -> jax.Array:
  p = jax.nn.sigmoid(logits.astype(jnp.float32))
  t = target.astype(jnp.float32)
  return 1.0 - (2.0 * jnp.sum(p * t) + eps) / (jnp.sum(p) + jnp.sum(t) + eps)


def binary_iou(pred: jax.Array, true: jax.Array) -> jax.Array:
  """IoU of two binary masks over all their pixels (1 when both are empty)."""
  p = pred > 0.5
  t = true > 0.5
  inter = jnp.sum(p & t)
  union = jnp.sum(p | t)
  return jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0).astype(jnp.float32)


def make_fns(
    cfg: ConfigDict, resolution: int
) -> tuple[Callable[[jax.Array], State], Callable[[State, dict], tuple[State, dict]]]:
  """(init_fn, step_fn) of the segmentation stage; batches need 'masked', 'mask'."""
  model = segmenter_from_config(cfg)
  tx = make_optimizer(cfg.optimizer, int(cfg.num_steps))
  dice_w = float(cfg.dice_weight)
  pos_w = float(cfg.pos_weight)

  def init_fn(key: jax.Array) -> State:
    params = model.init(key, jnp.zeros((1, resolution, resolution, 3)))["params"]
    return {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  def loss_fn(params, x, m):
    logits = model.apply({"params": params}, x)
    bce = bce_loss(logits, m, pos_w)
    dice = soft_dice_loss(logits, m)
    total = bce + dice_w * dice if dice_w else bce
    return total, (bce, dice, logits)

  def step_fn(state: State, batch: dict) -> tuple[State, dict]:
    x, m = batch["masked"], batch["mask"]
    (total, (bce, dice, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], x, m
    )
    upd, opt = tx.update(grads, state["opt"], state["params"])
    new = {
        "params": optax.apply_updates(state["params"], upd),
        "opt": opt,
        "step": state["step"] + 1,
    }
    pred = (logits > 0.0).astype(jnp.float32)  # sigmoid > 0.5
    metrics = {
        "loss/total": total,
        "loss/bce": bce,
        "loss/dice": dice,
        "train/iou": binary_iou(pred, m),
        "grad_norm/segmenter": optax.tree.norm(grads),
    }
    return new, metrics

  return init_fn, step_fn


def iou_per_category(pred: np.ndarray, true: np.ndarray, category: np.ndarray) -> dict[str, float]:
  """IoU per occluder category, over the union of all pixels of its examples.

  ``pred`` / ``true``: (B, H, W[, 1]) binary masks (> 0.5 = occluded);
  ``category``: (B,) indices into ``masks.CATEGORIES``. Returns
  ``{name: IoU}`` for the categories present, plus ``'mixed'`` over every
  example. A category whose predicted and true masks are both empty gets 1.0.
  """
  p = np.asarray(pred) > 0.5
  t = np.asarray(true) > 0.5
  category = np.asarray(category).reshape(-1)
  if p.shape != t.shape or p.shape[0] != len(category):
    raise ValueError(f"pred {p.shape}, true {t.shape} and category {category.shape} disagree")
  p = p.reshape(len(category), -1)
  t = t.reshape(len(category), -1)
  inter = np.sum(p & t, axis=1, dtype=np.int64)
  union = np.sum(p | t, axis=1, dtype=np.int64)

  def iou(sel):
    i, u = int(inter[sel].sum()), int(union[sel].sum())
    return float(i / u) if u else 1.0

  out = {}
  for c, name in enumerate(CATEGORIES):
    sel = category == c
    if sel.any():
      out[name] = iou(sel)
  out["mixed"] = iou(np.ones(len(category), bool))
  return out
