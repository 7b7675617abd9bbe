"""One SGD training step of the ResNet-18 student: JAX/Flax vs an equivalent PyTorch model.

Step = forward (train-mode BatchNorm) + loss + backward + SGD (momentum 0.9)
update. Loss = Eq. 16 with hard instance loss:
``CE(labels) + 1 * L1(teacher, embedding) + 1 * distance + 2 * angle`` on the
512-d embedding against fixed random "teacher" embeddings. The PyTorch
ResNet-18 is written by hand below (torchvision is not available); same
architecture (ImageNet stem by default, ``--small-stem`` for the 3x3 stem),
losses in RKD's formulation. Median wall time of ``--steps`` steps after one
warm-up (compile) step, both run in this process one after the other.

Usage: python benchmarks/bench_student_step.py [--batch 16] [--sizes 64 128] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

NUM_CLASSES = 100
EMB = 512


def torch_model(small: bool):
  import torch.nn as tnn
  import torch.nn.functional as F

  class Block(tnn.Module):

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.c1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.b1 = tnn.BatchNorm2d(cout)
      self.c2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.b2 = tnn.BatchNorm2d(cout)
      self.down = (
          tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))
          if stride != 1 or cin != cout
          else None
      )

    def forward(self, x):
      y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
      return F.relu(y + (x if self.down is None else self.down(x)))

  class ResNet18(tnn.Module):

    def __init__(self):
      super().__init__()
      self.stem = (
          tnn.Conv2d(3, 64, 3, 1, 1, bias=False)
          if small
          else tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
      )
      self.bn = tnn.BatchNorm2d(64)
      layers, cin = [], 64
      for i, w in enumerate((64, 128, 256, 512)):
        for j in range(2):
          layers.append(Block(cin, w, 2 if (i > 0 and j == 0) else 1))
          cin = w
      self.layers = tnn.Sequential(*layers)
      self.emb = tnn.Linear(512, EMB)
      self.cls = tnn.Linear(EMB, NUM_CLASSES)

    def forward(self, x):
      x = F.relu(self.bn(self.stem(x)))
      if not small:
        x = F.max_pool2d(x, 3, 2, 1)
      f = self.layers(x).mean((2, 3))
      e = self.emb(f)
      return e, self.cls(e)

  return ResNet18()


def torch_step_time(size, batch, steps, small):
  import numpy as np
  import torch
  import torch.nn.functional as F
  from bench_relational_losses import _torch_losses

  rk = _torch_losses()
  torch.manual_seed(0)
  model = torch_model(small)
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  rng = np.random.default_rng(0)
  x = torch.tensor(rng.uniform(-1, 1, (batch, 3, size, size)).astype("float32"))
  y = torch.tensor(rng.integers(0, NUM_CLASSES, batch))
  t = torch.tensor(rng.normal(size=(batch, EMB)).astype("float32"))
  times = []
  for _ in range(steps + 1):
    t0 = time.perf_counter()
    opt.zero_grad()
    e, logits = model(x)
    loss = (
        F.cross_entropy(logits, y)
        + (e - t).abs().mean()
        + rk["distance"](e, t)
        + 2 * rk["angle"](e, t)
    )
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t0)
  return _common.median(times[1:]), float(loss.detach())


def jax_step_time(size, batch, steps, small):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from deocc_jax.losses import distillation
  from deocc_jax.models.student import ResNet18Student

  model = ResNet18Student(embedding_dim=EMB, num_classes=NUM_CLASSES, small_input_stem=small)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, NUM_CLASSES, batch))
  t = jnp.asarray(rng.normal(size=(batch, EMB)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), x)
  tx = optax.sgd(0.1, momentum=0.9)
  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state, x, y, t):
    def loss_fn(p):
      out, upd = model.apply(
          {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
      )
      total, _ = distillation.total_distillation_loss(t, out["embedding"], out["logits"], y)
      return total, upd["batch_stats"]

    (loss, new_stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  times = []
  for _ in range(steps + 1):
    t0 = time.perf_counter()
    params, stats, opt_state, loss = step(params, stats, opt_state, x, y, t)
    jax.block_until_ready(params)
    times.append(time.perf_counter() - t0)
  return _common.median(times[1:]), float(loss), times[0]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--small-stem", action="store_true")
  args = ap.parse_args()
  import torch

  info = _common.machine()
  info["torch"] = torch.__version__
  info["torch_threads"] = torch.get_num_threads()
  rows = []
  for size in args.sizes:
    js, jl, jcompile = jax_step_time(size, args.batch, args.steps, args.small_stem)
    ts, tl = torch_step_time(size, args.batch, args.steps, args.small_stem)
    rows.append(
        {
            "size": size,
            "batch": args.batch,
            "stem": "3x3" if args.small_stem else "imagenet",
            "jax_s": js,
            "jax_first_step_s_incl_compile": jcompile,
            "torch_s": ts,
            "jax_over_torch": round(js / ts, 3),
            "jax_final_loss": jl,
            "torch_final_loss": tl,
        }
    )
    print(rows[-1], flush=True)
  md = [
      "# Student training step: JAX/Flax vs PyTorch (CPU)",
      "",
      f"Machine: {info['cpu']}, {info['cores']} cores, load avg at start "
      f"{info['loadavg_at_start']}; jax {info.get('jax')}, torch {info['torch']} "
      f"({info['torch_threads']} threads); {info['date']}.",
      "",
      "One SGD (momentum 0.9) step of ResNet-18 + 512-d embedding + 100-way classifier, "
      "loss = CE + L1 instance + distance + 2 x angle (Eq. 16); median wall seconds over "
      f"{args.steps} steps after a warm-up step. Losses differ in value (different random "
      "init), not in definition (up to the documented normalisation of the distance mean).",
      "",
      "| px | batch | stem | JAX s/step | torch s/step | JAX/torch | JAX first step (compile) s |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    md.append(
        f"| {r['size']} | {r['batch']} | {r['stem']} | {r['jax_s']:.3f} | "
        f"{r['torch_s']:.3f} | {r['jax_over_torch']:.3f} | "
        f"{r['jax_first_step_s_incl_compile']:.1f} |"
    )
  _common.write("bench_student_step", {"machine": info, "rows": rows}, "\n".join(md))


if __name__ == "__main__":
  main()
