"""Stage 1: de-occlusion — the DeepFill-v1 generator with global + local critics.

One jitted step does ``n_critic`` critic updates then one generator update on
the same batch (fresh gradient-penalty noise per critic update). Generator
loss = reconstruction (Eq. 7 plain L1, or DeepFill's discounted L1 + AE) +
``lambda_adv`` x (global + local adversarial loss, Eq. 8). The local critic
sees each sample's hole bounding box resized to ``local_size``.
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
from deocc_jax.models.critics import GlobalLocalCritics, crop_hole_boxes
from deocc_jax.models.generator import InpaintGenerator, complete
from deocc_jax.training.optim import make_optimizer

State = dict[str, Any]


def generator_from_config(cfg: ConfigDict) -> InpaintGenerator:
  return InpaintGenerator(cnum=int(cfg.cnum), dtype=jnp.dtype(cfg.get("dtype", "float32")),
                          use_contextual_attention=bool(cfg.get("contextual_attention", True)))


def make_fns(cfg: ConfigDict, resolution: int
             ) -> tuple[Callable[[jax.Array], State], Callable[[State, dict], tuple[State, dict]]]:
  """(init_fn, step_fn); batches need 'masked', 'mask', 'clean'."""
  gen = generator_from_config(cfg)
  critics = GlobalLocalCritics(cnum=int(cfg.critic_cnum),
                               dtype=jnp.dtype(cfg.get("dtype", "float32")))
  g_tx = make_optimizer(cfg.g_optimizer, int(cfg.num_steps))
  d_tx = make_optimizer(cfg.d_optimizer, int(cfg.num_steps) * int(cfg.n_critic))
  kind = str(cfg.adversarial)
  recon = str(cfg.reconstruction)
  lam_adv = float(cfg.lambda_adv)
  n_critic = int(cfg.n_critic)
  local = int(cfg.local_size)
  gp_lambda = float(cfg.get("gp_lambda", adv.WGAN_GP_LAMBDA))

  def init_fn(key: jax.Array) -> State:
    kg, kd, kr = jax.random.split(key, 3)
    x = jnp.zeros((1, resolution, resolution, 3))
    m = jnp.zeros((1, resolution, resolution, 1)).at[:, resolution // 4: resolution // 2,
                                                     resolution // 4: resolution // 2].set(1)
    gp = gen.init(kg, x, m)["params"]
    dp = critics.init(kd, x, jnp.zeros((1, local, local, 3)))["params"]
    return {"g": gp, "d": dp, "g_opt": g_tx.init(gp), "d_opt": d_tx.init(dp),
            "rng": jax.random.key_data(kr), "step": jnp.zeros((), jnp.int32)}

  def scores(dp, images, masks):
    return critics.apply({"params": dp}, images, crop_hole_boxes(images, masks, local))

  def step_fn(state: State, batch: dict) -> tuple[State, dict]:
    x, m, y = batch["masked"], batch["mask"], batch["clean"]
    key = jax.random.wrap_key_data(state["rng"])
    key, *gp_keys = jax.random.split(key, 1 + 2 * n_critic)
    out = gen.apply({"params": state["g"]}, x, m)
    fake = jax.lax.stop_gradient(complete(x, m, out.refined))

    def d_loss_fn(dp, k_glob, k_loc):
      rg, rl = scores(dp, y, m)
      fg, fl = scores(dp, fake, m)
      lg = adv.discriminator_loss(kind, rg, fg)
      ll = adv.discriminator_loss(kind, rl, fl)
      gp = jnp.zeros(())
      if kind == "wgan_gp":
        gp = adv.gradient_penalty(
            lambda z: critics.apply({"params": dp}, z, method="global_score"), y, fake, m, k_glob)
        yl, fl_img = crop_hole_boxes(y, m, local), crop_hole_boxes(fake, m, local)
        gp = gp + adv.gradient_penalty(
            lambda z: critics.apply({"params": dp}, z, method="local_score"), yl, fl_img,
            None, k_loc)
      return lg + ll + gp_lambda * gp, (lg, ll, gp)

    dp, d_opt = state["d"], state["d_opt"]
    d_terms = None
    for i in range(n_critic):
      (_, d_terms), dg = jax.value_and_grad(d_loss_fn, has_aux=True)(
          dp, gp_keys[2 * i], gp_keys[2 * i + 1])
      upd, d_opt = d_tx.update(dg, d_opt, dp)
      dp = optax.apply_updates(dp, upd)

    def g_loss_fn(gp):
      o = gen.apply({"params": gp}, x, m)
      rec, rec_terms = reconstruction_loss(recon, y, o.coarse, o.refined, m)
      comp = complete(x, m, o.refined)
      sg, sl = scores(dp, comp, m)
      ag = adv.generator_adversarial_loss(kind, sg)
      al = adv.generator_adversarial_loss(kind, sl)
      return rec + lam_adv * (ag + al), (rec, ag, al)

    (g_total, (rec, ag, al)), gg = jax.value_and_grad(g_loss_fn, has_aux=True)(state["g"])
    upd, g_opt = g_tx.update(gg, state["g_opt"], state["g"])
    g_params = optax.apply_updates(state["g"], upd)
    hole = jnp.sum(m)
    comp = complete(x, m, out.refined)
    hole_l1 = jnp.sum(jnp.abs(comp - y) * m) / jnp.maximum(hole * 3, 1.0)
    new = {"g": g_params, "d": dp, "g_opt": g_opt, "d_opt": d_opt,
           "rng": jax.random.key_data(key), "step": state["step"] + 1}
    return new, {"loss/g_total": g_total, "loss/reconstruction": rec,
                 "loss/g_adv_global": ag, "loss/g_adv_local": al,
                 "loss/d_global": d_terms[0], "loss/d_local": d_terms[1],
                 "loss/gradient_penalty": d_terms[2], "metric/hole_l1": hole_l1,
                 "grad_norm/g": optax.tree.norm(gg), "grad_norm/d": optax.tree.norm(dg)}

  return init_fn, step_fn


def complete_fn(cfg: ConfigDict, g_params: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Frozen generator: (masked, mask) -> completed faces ``X*(1-M) + G*M``."""
  gen = generator_from_config(cfg)

  def f(x: jax.Array, m: jax.Array) -> jax.Array:
    out = gen.apply({"params": g_params}, x, m)
    return complete(x, m, out.refined)
  return f


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
