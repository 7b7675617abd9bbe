"""The fine-tuned-teacher baseline of Table 2 for a pretrained (converted)
teacher (issue 10, fix 7): the teacher's own network and a new ArcFace head
are trained on input_fn's images; BatchNorm statistics stay fixed."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from deocc_jax.configs import fields
from deocc_jax.runs import builders
from deocc_jax.teachers import api
from deocc_jax.training import finetune_stage


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3), strides=(2, 2))(x)
    x = nn.BatchNorm(use_running_average=True)(x)
    x = nn.relu(x).mean(axis=(1, 2))
    return {"embedding": nn.Dense(6)(x), "logits": nn.Dense(11)(x)}


def _teacher():
  net = _Net()
  variables = net.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  variables = {
      "params": variables["params"],
      "batch_stats": jax.tree.map(lambda v: v + 0.3, variables["batch_stats"]),
  }
  return api.Teacher("converted-test", variables, lambda p, x: net.apply(p, x), 6, 16, {})


def _reference_arcface(emb, w, labels, s, m):
  """float64 numpy: normalised cosines, target angle + m, softmax CE."""
  e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  w = w / np.linalg.norm(w, axis=0, keepdims=True)
  cos = np.clip(e @ w, -1, 1)
  logits = s * cos.copy()
  for i, y in enumerate(labels):
    theta = math.acos(cos[i, y])
    logits[i, y] = s * (
        math.cos(theta + m) if theta + m <= math.pi else cos[i, y] - math.sin(math.pi - m) * m
    )
  logits -= logits.max(1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  return -np.mean(logp[np.arange(len(labels)), labels])


def test_finetune_converted_teacher_step():
  teacher = _teacher()
  cfg = ConfigDict(
      dict(
          **fields.optimizer_fields(optimizer="sgd", lr=0.5, momentum=0.0, schedule="constant"),
          num_steps=3,
          arcface_scale=16.0,
          arcface_margin=0.3,
      )
  )
  rng = np.random.default_rng(0)
  batch = {
      "masked": rng.uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32),
      "identity": rng.integers(0, 5, 8).astype(np.int32),
  }
  frozen = {"shift": jnp.float32(0.25)}
  input_fn = lambda fz, b: b["masked"] + fz["shift"]  # noqa: E731
  init_fn, step_fn = finetune_stage.make_fns(cfg, teacher, 5, input_fn)
  state = init_fn(jax.random.key(1))
  new, metrics = jax.jit(step_fn)(state, batch, frozen)

  emb = np.asarray(
      teacher.apply(teacher.params, jnp.asarray(batch["masked"] + 0.25))["embedding"], np.float64
  )
  want = _reference_arcface(
      emb, np.asarray(state["params"]["head"]["weight"], np.float64), batch["identity"], 16.0, 0.3
  )
  np.testing.assert_allclose(float(metrics["loss/arcface"]), want, rtol=1e-4)
  # The teacher's params and the head move; BatchNorm statistics and frozen do not.
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new["params"], state["params"])
  assert all(v > 0 for v in jax.tree.leaves(moved["head"]))
  assert moved["backbone"]["Conv_0"]["kernel"] > 0
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), new["fixed"], state["fixed"]))
  assert int(new["step"]) == 1 and "frozen" not in new and float(frozen["shift"]) == 0.25
  # The baseline's embedding is the fine-tuned network's, L2-normalised.
  x = jnp.asarray(batch["masked"])
  got = np.asarray(builders.finetuned_embed_fn(teacher, new)(x))
  ref = np.asarray(
      teacher.apply({**new["fixed"], "params": new["params"]["backbone"]}, x)["embedding"],
      np.float64,
  )
  np.testing.assert_allclose(got, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
  before = np.asarray(builders.finetuned_embed_fn(teacher, state)(x))
  assert np.abs(got - before).max() > 1e-4
