"""End-to-end training (Eq. 6): the generator and the student together.

The distillation loss now reaches the generator through the completed faces,
so completion is shaped for recognition as well as appearance::

    L = lambda_gan * (L_rec + lambda_adv L_adv)  +  lambda_distill * L_Eq16(student(G(X, M)))

The critics keep their own updates (``n_critic`` per step). Optionally the
generator, critics and student start from the stage-1 / stage-2 checkpoints.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from deocc_jax.losses import distillation
from deocc_jax.models.generator import complete
from deocc_jax.runs.builders import student_from_config
from deocc_jax.training.deocclusion_stage import GanParts, hole_l1
from deocc_jax.training.distillation_stage import head_classes
from deocc_jax.training.optim import make_optimizer

State = dict[str, Any]


def make_fns(
    cfg: ConfigDict,
    deocc_cfg: ConfigDict,
    distill_cfg: ConfigDict,
    teacher_apply: Callable,
    embed_dim: int,
    num_classes: int,
    resolution: int,
    init_from: dict[str, Any] | None = None,
    teacher_num_classes: int | None = None,
) -> tuple[Callable[[jax.Array], State], Callable[[State, dict], tuple[State, dict]]]:
  """(init_fn, step_fn(state, batch, frozen)) with ``frozen`` = {'teacher',
  'centroids'?} (jit arguments, not state); ``init_from``
  optionally {'g', 'd', 'student': {'params', 'batch_stats'}} from earlier stages.
  ``L_CE`` follows ``distill_cfg.ce_target`` as in the distillation stage."""
  parts = GanParts(deocc_cfg, resolution)
  student = student_from_config(
      distill_cfg, embed_dim, head_classes(distill_cfg, num_classes, teacher_num_classes)
  )
  ce_kw = dict(ce_target=str(distill_cfg.ce_target), temperature=float(distill_cfg.temperature))
  s_tx = make_optimizer(distill_cfg, int(cfg.num_steps))
  mode = str(cfg.instance)
  lam_gan, lam_distill = float(cfg.lambda_gan), float(cfg.lambda_distill)
  lam = dict(
      lambda_i=float(distill_cfg.lambda_i),
      lambda_p=float(distill_cfg.lambda_p),
      lambda_t=float(distill_cfg.lambda_t),
  )

  def init_fn(key: jax.Array) -> State:
    kg, ks = jax.random.split(key)
    gan = parts.init(kg)
    v = student.init(ks, jnp.zeros((1, resolution, resolution, 3)), train=False)
    sp, stats = v["params"], v["batch_stats"]
    if init_from is not None:
      gan["g"], gan["d"] = init_from["g"], init_from["d"]
      gan["g_opt"], gan["d_opt"] = parts.g_tx.init(gan["g"]), parts.d_tx.init(gan["d"])
      sp, stats = init_from["student"]["params"], init_from["student"]["batch_stats"]
    return {
        **gan,
        "s": sp,
        "s_stats": stats,
        "s_opt": s_tx.init(sp),
    }

  def step_fn(state: State, batch: dict, fz: dict[str, Any]) -> tuple[State, dict]:
    x, m, y, labels = batch["masked"], batch["mask"], batch["clean"], batch["identity"]
    if mode == "soft" and fz.get("centroids") is None:
      raise ValueError("soft instance loss (Eq. 17) needs teacher identity centroids (Eq. 18)")
    key, k_d = jax.random.split(jax.random.wrap_key_data(state["rng"]))
    out = parts.gen.apply({"params": state["g"]}, x, m)
    fake = jax.lax.stop_gradient(complete(x, m, out.refined))
    dp, d_opt, d_terms, dg_norm = parts.critic_updates(state["d"], state["d_opt"], y, fake, m, k_d)
    t_out = teacher_apply(fz["teacher"], y)
    t_emb = jax.lax.stop_gradient(t_out["embedding"])
    t_logits = t_out.get("logits")
    t_logits = None if t_logits is None else jax.lax.stop_gradient(t_logits)

    def loss_fn(gp, sp):
      g_loss, (rec, ag, al, comp) = parts.generator_loss(gp, dp, x, m, y)
      s_out, upd = student.apply(
          {"params": sp, "batch_stats": state["s_stats"]}, comp, train=True, mutable=["batch_stats"]
      )
      d_total, terms = distillation.total_distillation_loss(
          t_emb,
          s_out["embedding"].astype(jnp.float32),
          s_out.get("logits"),
          labels,
          instance_mode=mode,
          centroids=fz.get("centroids"),
          **lam,
          **ce_kw,
          teacher_logits=t_logits,
      )
      total = lam_gan * g_loss + lam_distill * d_total
      return total, (upd["batch_stats"], g_loss, rec, ag, al, d_total, terms, comp)

    (total, aux), (gg, sg) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        state["g"], state["s"]
    )
    stats, g_loss, rec, ag, al, d_total, terms, comp = aux
    g_upd, g_opt = parts.g_tx.update(gg, state["g_opt"], state["g"])
    s_upd, s_opt = s_tx.update(sg, state["s_opt"], state["s"])
    new = {
        "g": optax.apply_updates(state["g"], g_upd),
        "d": dp,
        "g_opt": g_opt,
        "d_opt": d_opt,
        "rng": jax.random.key_data(key),
        "step": state["step"] + 1,
        "s": optax.apply_updates(state["s"], s_upd),
        "s_stats": stats,
        "s_opt": s_opt,
    }
    return new, {
        "loss/total": total,
        "loss/generator": g_loss,
        "loss/reconstruction": rec,
        "loss/g_adv_global": ag,
        "loss/g_adv_local": al,
        "loss/d_global": d_terms[0],
        "loss/d_local": d_terms[1],
        "loss/distillation": d_total,
        **{f"loss/{k}": v for k, v in terms.items()},
        "metric/hole_l1": hole_l1(comp, y, m),
        "grad_norm/g": optax.tree.norm(gg),
        "grad_norm/student": optax.tree.norm(sg),
        "grad_norm/d": dg_norm,
    }

  return init_fn, step_fn
