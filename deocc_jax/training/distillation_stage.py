"""Stage 2: distillation — the student learns the teacher's relational structure.

The frozen generator completes each masked face online; the frozen teacher
embeds the clean face; the student (ResNet-18 + embedding layer + classifier)
embeds the completed face and minimises Eq. 16:
``L_CE + lambda_i L_i + lambda_p L_p + lambda_t L_t`` with the hard
instance loss (Eq. 12) or the soft identity-centred one (Eq. 17, centroids of
Eq. 18 from the offline teacher job). The relational terms act on the
student's ``'embedding'`` output and the teacher's (L2-normalised) embedding.

``L_CE`` (``config.distillation.ce_target``):

* ``'teacher'`` (the paper, text after Eq. 16: Eq. 10 with cross-entropy
  between the outputs of the teacher and the student): the student's
  classifier has one output per *teacher* class (8,631 for the VGGFace2
  teachers) and is trained on the teacher's softened class distribution of the
  clean face, ``softmax(teacher_logits / T)``, Hinton's KD with the ``T^2``
  factor that keeps the gradient scale independent of ``T``
  (:func:`deocc_jax.losses.distillation.cross_entropy`). Needs a teacher with a
  classifier (``Teacher.num_classes``); dlib's has none.
* ``'labels'``: cross-entropy with the data set's identity labels (a head over
  the training identities).

The relational terms run over the GLOBAL batch: inside the jitted step the
batch is one global array, and with ``sharded_relational=True`` each device
computes its block of tuples against the all-gathered batch
(``relational.sharded_relational_losses``).

Frozen parameters (generator, teacher, centroids) are the step's third
argument, ``step_fn(state, batch, frozen)``: placed on the mesh once by the
loop, never in the state, so a student's checkpoint and its trained artefact
hold the student alone (as big_vision's distill trainer does).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from deocc_jax.losses import distillation, relational
from deocc_jax.runs.builders import generator_from_config, student_from_config
from deocc_jax.training.optim import make_optimizer

State = dict[str, Any]


def head_classes(
    cfg: ConfigDict,
    num_labels: int,
    teacher_num_classes: int | None,
    teacher_name: str = "the teacher",
) -> int | None:
  """Outputs of the student's classifier: the teacher's classes for
  ``ce_target='teacher'``, the data set's identities for ``'labels'``, None
  without ``L_CE``. Raises a ValueError naming the config key otherwise."""
  if not bool(cfg.use_ce):
    return None
  ce_target = str(cfg.ce_target)
  if ce_target == "labels":
    return int(num_labels)
  if ce_target == "teacher":
    if teacher_num_classes is None:
      raise ValueError(
          f"config.distillation.ce_target='teacher' trains the student on the teacher's class "
          f"outputs, but {teacher_name} has no classifier head (e.g. the dlib teacher); use "
          "ce_target='labels' (cross-entropy with the identity labels) or a teacher with "
          "logits (converted VGGFace2 / facenet, or the ArcFace teacher trained here)"
      )
    return int(teacher_num_classes)
  raise ValueError(
      f"config.distillation.ce_target must be 'labels' or 'teacher', " f"got {ce_target!r}"
  )


def make_fns(
    cfg: ConfigDict,
    deocc_cfg: ConfigDict,
    teacher_apply: Callable,
    embed_dim: int,
    num_classes: int,
    resolution: int,
    mesh: Mesh | None = None,
    teacher_num_classes: int | None = None,
    teacher_name: str = "the teacher",
    complete: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None,
) -> tuple[Callable[[jax.Array], State], Callable[[State, dict], tuple[State, dict]]]:
  """(init_fn, step_fn(state, batch, frozen)); ``frozen`` = {'teacher',
  'generator', 'centroids'?} is a jit argument, never part of the state.

  ``complete(g_params, masked, mask) -> completed``: the frozen completion
  network ``frozen['generator']`` parametrises (``runs.trained_models.
  completion_from`` of a de-occlusion stage's artefact: DeepFill's G, GFC,
  IDGAN); default: DeepFill's G built from ``deocc_cfg``.

  ``num_classes``: identities of the training labels; ``teacher_num_classes``:
  outputs of the teacher's classifier (``Teacher.num_classes``), the student's
  head size for ``ce_target='teacher'``. Batches need 'masked', 'mask',
  'clean', 'identity'.
  """
  mode = str(cfg.instance)
  if mode not in ("hard", "soft", "none"):
    raise ValueError(f"config.distillation.instance must be 'hard', 'soft' or 'none', got {mode!r}")
  ce_target = str(cfg.ce_target)
  use_ce = bool(cfg.use_ce)
  n_head = head_classes(cfg, num_classes, teacher_num_classes, teacher_name)
  student = student_from_config(cfg, embed_dim, n_head)
  if complete is None:
    gen = generator_from_config(deocc_cfg)

    def complete(g_params: Any, x: jax.Array, m: jax.Array) -> jax.Array:
      out = gen.apply({"params": g_params}, x, m)
      return x * (1 - m) + out.refined * m

  tx = make_optimizer(cfg, int(cfg.num_steps))
  sharded_rel = bool(cfg.sharded_relational)
  block = int(cfg.angle_block_size) or None
  lam = dict(
      lambda_i=float(cfg.lambda_i), lambda_p=float(cfg.lambda_p), lambda_t=float(cfg.lambda_t)
  )

  def init_fn(key: jax.Array) -> State:
    v = student.init(key, jnp.zeros((1, resolution, resolution, 3)), train=False)
    return {
        "params": v["params"],
        "batch_stats": v["batch_stats"],
        "opt": tx.init(v["params"]),
        "step": jnp.zeros((), jnp.int32),
    }

  def step_fn(state: State, batch: dict, fz: dict[str, Any]) -> tuple[State, dict]:
    if mode == "soft" and fz.get("centroids") is None:
      raise ValueError("soft instance loss (Eq. 17) needs teacher identity centroids (Eq. 18)")
    x, m, y, labels = batch["masked"], batch["mask"], batch["clean"], batch["identity"]
    completed = jax.lax.stop_gradient(complete(fz["generator"], x, m))
    t_out = teacher_apply(fz["teacher"], y)
    t_emb = jax.lax.stop_gradient(t_out["embedding"])
    t_logits = t_out.get("logits")
    if use_ce and ce_target == "teacher":
      if t_logits is None:
        raise ValueError(
            f"config.distillation.ce_target='teacher': {teacher_name}'s apply "
            "returned no 'logits'"
        )
      if t_logits.shape[-1] != n_head:
        raise ValueError(
            f"config.distillation.ce_target='teacher': {teacher_name} has "
            f"{t_logits.shape[-1]} class outputs, the student's head {n_head}"
        )

    def loss_fn(p):
      s_out, upd = student.apply(
          {"params": p, "batch_stats": state["batch_stats"]},
          completed,
          train=True,
          mutable=["batch_stats"],
      )
      s_emb = s_out["embedding"].astype(jnp.float32)
      if sharded_rel and mesh is not None:
        total, terms = distillation.total_distillation_loss(
            t_emb,
            s_emb,
            s_out.get("logits"),
            labels,
            instance_mode=mode,
            centroids=fz.get("centroids"),
            lambda_i=lam["lambda_i"],
            lambda_p=0.0,
            lambda_t=0.0,
            ce_target=ce_target,
            teacher_logits=None if t_logits is None else jax.lax.stop_gradient(t_logits),
            temperature=float(cfg.temperature),
            angle_block_size=block,
        )
        rel = relational.sharded_relational_losses(t_emb, s_emb, mesh, block_size=block)
        terms = {**terms, **rel}
        total = total + lam["lambda_p"] * rel["distance"] + lam["lambda_t"] * rel["angle"]
      else:
        total, terms = distillation.total_distillation_loss(
            t_emb,
            s_emb,
            s_out.get("logits"),
            labels,
            instance_mode=mode,
            centroids=fz.get("centroids"),
            **lam,
            ce_target=ce_target,
            teacher_logits=None if t_logits is None else jax.lax.stop_gradient(t_logits),
            temperature=float(cfg.temperature),
            angle_block_size=block,
        )
      return total, (upd["batch_stats"], terms, s_out.get("logits"))

    (total, (stats, terms, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"]
    )
    updates, opt = tx.update(grads, state["opt"], state["params"])
    new = {
        "params": optax.apply_updates(state["params"], updates),
        "batch_stats": stats,
        "opt": opt,
        "step": state["step"] + 1,
    }
    metrics = {
        "loss/total": total,
        **{f"loss/{k}": v for k, v in terms.items()},
        "grad_norm/student": optax.tree.norm(grads),
    }
    if logits is not None and ce_target == "teacher":
      # top-1 agreement with the teacher's class on the clean face
      metrics["train/teacher_agreement"] = jnp.mean(
          jnp.argmax(logits, -1) == jnp.argmax(t_logits, -1)
      )
    elif logits is not None:
      metrics["train/accuracy"] = jnp.mean(jnp.argmax(logits, -1) == labels)
    return new, metrics

  return init_fn, step_fn
