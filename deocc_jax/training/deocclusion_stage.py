"""Stage 1: de-occlusion — the DeepFill-v1 generator with global + local critics.

One jitted step does ``n_critic`` critic updates then one generator update on
the same batch (fresh gradient-penalty noise per critic update). Generator
loss = reconstruction + ``lambda_adv`` x (global + local adversarial loss).
The local critic sees each sample's hole bounding box resized to
``local_size``. Two objectives (``config.deocclusion``):

* the paper's Eq. 7-8 (``reconstruction='l1'``, ``adversarial='gan'``): L1 on
  the refined output + the log-loss GAN of both critics;
* DeepFill v1's (the paper adopts "GA with contextual attention";
  ``reconstruction='deepfill'``, ``adversarial='wgan_gp'``), as in the official
  ``inpaint_model.py``: spatially discounted hole L1 (gamma 0.9) and the
  known-region ("ae") L1, each on the coarse output (x ``coarse_alpha`` 1.2)
  and the refined one, weighted ``l1_alpha`` / ``ae_alpha`` (1.2 each)
  (``losses/reconstruction.py``); WGAN on the global and local critics with
  ``lambda_adv`` = DeepFill's ``gan_loss_alpha`` 0.001; the critics' WGAN-GP
  (lambda ``gp_lambda`` 10) with the gradient penalty restricted to the hole for
  BOTH critics: the whole-image mask for the global one, the mask cropped and
  resized with the local patch (the fraction of each local pixel that is hole)
  for the local one; ``n_critic`` 5 critic updates per generator update; Adam
  1e-4 (0.5, 0.9) for both. Differences from the official code: holes are the
  data's occluders (any shape), not one rectangle, so the local patch is the
  hole's bounding box resized and the discounting is computed from the mask
  (``losses/reconstruction.py``); the five critic updates use the step's batch
  (DeepFill's secondary trainer draws a new batch for each).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from deocc_jax.losses import adversarial as adv
from deocc_jax.losses.reconstruction import reconstruction_loss
from deocc_jax.models.critics import GlobalLocalCritics, crop_hole_boxes, hole_boxes
from deocc_jax.models.generator import complete
from deocc_jax.runs.builders import generator_from_config
from deocc_jax.training.optim import make_optimizer

State = dict[str, Any]


class GanParts:
  """The generator, the critics and their losses, shared by the de-occlusion
  and joint stages. All methods are pure functions of explicit parameters."""

  def __init__(self, cfg: ConfigDict, resolution: int):
    self.gen = generator_from_config(cfg)
    self.critics = GlobalLocalCritics(cnum=int(cfg.critic_cnum), dtype=jnp.dtype(cfg.dtype))
    self.g_tx = make_optimizer(cfg.g_optimizer, int(cfg.num_steps))
    self.d_tx = make_optimizer(cfg.d_optimizer, int(cfg.num_steps) * int(cfg.n_critic))
    self.kind = str(cfg.adversarial)
    self.recon = str(cfg.reconstruction)
    # DeepFill v1's reconstruction weights (only for reconstruction='deepfill').
    self.recon_kwargs = (
        {}
        if self.recon != "deepfill"
        else dict(
            gamma=float(cfg.discount_gamma),
            coarse_alpha=float(cfg.coarse_alpha),
            l1_alpha=float(cfg.l1_alpha),
            ae_alpha=float(cfg.ae_alpha),
        )
    )
    self.lam_adv = float(cfg.lambda_adv)
    self.n_critic = int(cfg.n_critic)
    self.local = int(cfg.local_size)
    self.gp_lambda = float(cfg.gp_lambda)
    self.resolution = resolution

  def init(self, key: jax.Array) -> State:
    r = self.resolution
    kg, kd, kr = jax.random.split(key, 3)
    x = jnp.zeros((1, r, r, 3))
    m = jnp.zeros((1, r, r, 1)).at[:, r // 4 : r // 2, r // 4 : r // 2].set(1)
    gp = self.gen.init(kg, x, m)["params"]
    dp = self.critics.init(kd, x, jnp.zeros((1, self.local, self.local, 3)))["params"]
    return {
        "g": gp,
        "d": dp,
        "g_opt": self.g_tx.init(gp),
        "d_opt": self.d_tx.init(dp),
        "rng": jax.random.key_data(kr),
        "step": jnp.zeros((), jnp.int32),
    }

  def scores(self, dp, images, masks):
    return self.critics.apply({"params": dp}, images, crop_hole_boxes(images, masks, self.local))

  def gradient_penalties(self, p, y, fake, m, k_glob, k_loc):
    """WGAN-GP terms (global, local), each restricted to the hole as in
    DeepFill v1: the global critic's with the image mask ``m``, the local
    critic's with ``m`` cropped and resized like the local patches."""
    local = self.local
    gp_g = adv.gradient_penalty(
        lambda z: self.critics.apply({"params": p}, z, method="global_score"), y, fake, m, k_glob
    )
    boxes = hole_boxes(m)
    crop = lambda z: crop_hole_boxes(z, m, local, boxes)  # noqa: E731
    gp_l = adv.gradient_penalty(
        lambda z: self.critics.apply({"params": p}, z, method="local_score"),
        crop(y),
        crop(fake),
        crop(m),
        k_loc,
    )
    return gp_g, gp_l

  def critic_updates(self, dp, d_opt, y, fake, m, key):
    """``n_critic`` critic updates on (real y, fake); returns (dp, d_opt, the last
    update's loss terms, the global norm of its critic gradient)."""
    kind = self.kind

    def d_loss_fn(p, k_glob, k_loc):
      rg, rl = self.scores(p, y, m)
      fg, fl = self.scores(p, fake, m)
      lg = adv.discriminator_loss(kind, rg, fg)
      ll = adv.discriminator_loss(kind, rl, fl)
      gp = jnp.zeros(())
      if kind == "wgan_gp":
        gp_g, gp_l = self.gradient_penalties(p, y, fake, m, k_glob, k_loc)
        gp = gp_g + gp_l
      return lg + ll + self.gp_lambda * gp, (lg, ll, gp)

    def update(carry, ks):
      dp, d_opt = carry
      (_, terms), dg = jax.value_and_grad(d_loss_fn, has_aux=True)(dp, ks[0], ks[1])
      upd, d_opt = self.d_tx.update(dg, d_opt, dp)
      return (optax.apply_updates(dp, upd), d_opt), (terms, optax.tree.norm(dg))

    # A scan, not a Python loop: one compiled critic update whatever n_critic
    # (XLA:CPU compile time grew linearly with the unrolled updates).
    keys = jax.random.split(key, 2 * self.n_critic).reshape(self.n_critic, 2)
    (dp, d_opt), (terms, dg_norm) = jax.lax.scan(update, (dp, d_opt), keys)
    return dp, d_opt, jax.tree.map(lambda t: t[-1], terms), dg_norm[-1]

  def generator_loss(self, gp, dp, x, m, y):
    """Reconstruction + lambda_adv (global + local adversarial); returns
    (loss, (rec, adv_global, adv_local, completed))."""
    o = self.gen.apply({"params": gp}, x, m)
    rec, _ = reconstruction_loss(self.recon, y, o.coarse, o.refined, m, **self.recon_kwargs)
    comp = complete(x, m, o.refined)
    sg, sl = self.scores(dp, comp, m)
    ag = adv.generator_adversarial_loss(self.kind, sg)
    al = adv.generator_adversarial_loss(self.kind, sl)
    return rec + self.lam_adv * (ag + al), (rec, ag, al, comp)


def hole_l1(completed: jax.Array, clean: jax.Array, m: jax.Array) -> jax.Array:
  """Mean absolute error inside the hole."""
  return jnp.sum(jnp.abs(completed - clean) * m) / jnp.maximum(jnp.sum(m) * 3, 1.0)


def make_fns(
    cfg: ConfigDict, resolution: int
) -> tuple[Callable[[jax.Array], State], Callable[[State, dict], tuple[State, dict]]]:
  """(init_fn, step_fn); batches need 'masked', 'mask', 'clean'."""
  parts = GanParts(cfg, resolution)

  def step_fn(state: State, batch: dict) -> tuple[State, dict]:
    x, m, y = batch["masked"], batch["mask"], batch["clean"]
    key, k_d = jax.random.split(jax.random.wrap_key_data(state["rng"]))
    out = parts.gen.apply({"params": state["g"]}, x, m)
    fake = jax.lax.stop_gradient(complete(x, m, out.refined))
    dp, d_opt, d_terms, dg_norm = parts.critic_updates(state["d"], state["d_opt"], y, fake, m, k_d)
    (g_total, (rec, ag, al, comp)), gg = jax.value_and_grad(parts.generator_loss, has_aux=True)(
        state["g"], dp, x, m, y
    )
    upd, g_opt = parts.g_tx.update(gg, state["g_opt"], state["g"])
    new = {
        "g": optax.apply_updates(state["g"], upd),
        "d": dp,
        "g_opt": g_opt,
        "d_opt": d_opt,
        "rng": jax.random.key_data(key),
        "step": state["step"] + 1,
    }
    return new, {
        "loss/g_total": g_total,
        "loss/reconstruction": rec,
        "loss/g_adv_global": ag,
        "loss/g_adv_local": al,
        "loss/d_global": d_terms[0],
        "loss/d_local": d_terms[1],
        "loss/gradient_penalty": d_terms[2],
        "metric/hole_l1": hole_l1(comp, y, m),
        "grad_norm/g": optax.tree.norm(gg),
        "grad_norm/d": dg_norm,
    }

  return parts.init, step_fn


def sample_grid(cfg: ConfigDict) -> Callable[[State, dict], np.ndarray]:
  """PNG rows: masked | coarse | completed | ground truth, 4 examples."""
  gen = generator_from_config(cfg)

  @jax.jit
  def run(g, x, m):
    o = gen.apply({"params": g}, x, m)
    return o.coarse, complete(x, m, o.refined)

  def grid(state: State, batch: dict) -> np.ndarray:
    k = min(4, batch["masked"].shape[0])
    x, m, y = (np.asarray(batch[n])[:k] for n in ("masked", "mask", "clean"))
    coarse, comp = (np.asarray(jax.device_get(a)) for a in run(state["g"], x, m))
    rows = [np.concatenate([x[i], coarse[i], comp[i], y[i]], axis=1) for i in range(k)]
    img = np.concatenate(rows, axis=0)
    return np.clip((img + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)

  return grid
