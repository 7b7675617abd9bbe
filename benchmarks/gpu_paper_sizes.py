"""GPU benchmark at the paper's sizes: throughput, step time and MFU.

One command, a few minutes on one accelerator::

    python benchmarks/gpu_paper_sizes.py            # writes benchmarks/results/gpu_paper_sizes.{md,json}

Measures, in float32 and bfloat16 compute:
* the de-occlusion step (DeepFill-v1 generator cnum 32 + global / local
  critics cnum 64, 256 px, batch 16 per device, GAN loss, 1 critic update),
* the distillation step at 224 px (the frozen generator completes the masked
  faces, a frozen ResNet-18-sized teacher embeds the clean ones, the ResNet-18
  student trains on all relational losses over the batch; batch 128).

MFU = model FLOPs per step (XLA's cost analysis of the compiled step) /
(step time x the device's peak dense FLOP/s: H100/H200 SXM 989 TFLOP/s bf16,
494 TFLOP/s tf32; A100 312 / 156; override with --peak-tflops).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from deocc_jax.configs import base  # noqa: E402
from deocc_jax.training import deocclusion_stage, distillation_stage  # noqa: E402

PEAKS_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0)}


def _peak(device_kind: str, bf16: bool, override: float | None) -> float | None:
  if override:
    return override * 1e12
  for name, (b, f) in PEAKS_TFLOPS.items():
    if name in device_kind:
      return (b if bf16 else f) * 1e12
  return None


def _time(step, state, batch, iters):
  state, m = step(state, batch)  # compile + warm-up
  jax.block_until_ready(m)
  state, m = step(state, batch)
  jax.block_until_ready(m)
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return float(np.median(times)), state


def _flops(step, state, batch, *frozen) -> float | None:
  try:
    cost = step.lower(state, batch, *frozen).compile().cost_analysis()
    if isinstance(cost, list):
      cost = cost[0]
    return float(cost.get("flops", 0.0)) or None
  except Exception:  # noqa: BLE001 - cost analysis is best effort
    return None


def _batch(rng, b: int, px: int, identities: bool) -> dict[str, np.ndarray]:
  """Random faces in [-1, 1] with a central rectangular hole."""
  mask = np.zeros((b, px, px, 1), np.float32)
  mask[:, 3 * px // 8 : 3 * px // 4, px // 4 : 3 * px // 4] = 1
  out = {
      "masked": rng.uniform(-1, 1, (b, px, px, 3)).astype(np.float32),
      "mask": mask,
      "clean": rng.uniform(-1, 1, (b, px, px, 3)).astype(np.float32),
  }
  if identities:
    out["identity"] = rng.integers(0, 8631, b).astype(np.int32)
  return out


def _measure(
    stage: str, init_fn, step_fn, batch, dtype: str, peak, iters: int, frozen=None
) -> dict:
  """Step time, throughput, FLOPs and MFU of one jitted, donating step
  (``frozen``: the frozen models, the step's third argument as in training)."""
  state = jax.jit(init_fn)(jax.random.key(0))
  jitted = jax.jit(step_fn, donate_argnums=(0,))
  extra = () if frozen is None else (jax.device_put(frozen),)
  flops = _flops(jitted, state, batch, *extra)
  step = lambda s, b: jitted(s, b, *extra)  # noqa: E731
  t, _ = _time(step, state, batch, iters)
  b, px = batch["masked"].shape[:2]
  return {
      "stage": stage,
      "dtype": dtype,
      "batch": b,
      "px": px,
      "step_s": t,
      "examples_per_s": b / t,
      "flops_per_step": flops,
      "mfu": flops / t / peak if flops and peak else None,
  }


def _section(name: str, **fields) -> ConfigDict:
  """A base-config section (every field the stage reads) with ``fields`` set."""
  c = base.get_config()[name]
  with c.unlocked():
    c.update(fields)
  return c


def deocc_config(dtype: str) -> ConfigDict:
  return _section(
      "deocclusion",
      cnum=32,
      critic_cnum=64,
      local_size=128,
      adversarial="gan",
      reconstruction="l1",
      lambda_adv=0.001,
      n_critic=1,
      num_steps=1000,
      dtype=dtype,
      contextual_attention=True,
      g_optimizer=dict(base.optimizer_fields(optimizer="adam", lr=1e-4, schedule="constant")),
      d_optimizer=dict(base.optimizer_fields(optimizer="adam", lr=1e-4, schedule="constant")),
  )


def distill_config(dtype: str) -> ConfigDict:
  return _section(
      "distillation",
      instance="hard",
      width=1.0,
      small_input_stem=False,
      use_ce=True,
      ce_target="labels",
      temperature=4.0,
      lambda_i=1.0,
      lambda_p=1.0,
      lambda_t=2.0,
      num_steps=1000,
      **base.optimizer_fields(optimizer="sgd", lr=0.1, momentum=0.9, schedule="constant"),
      dtype=dtype,
      angle_block_size=0,
  )


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--iters", type=int, default=20)
  ap.add_argument("--deocc-batch", type=int, default=16)
  ap.add_argument("--distill-batch", type=int, default=128)
  ap.add_argument("--peak-tflops", type=float, default=None)
  ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
  ap.add_argument("--deocc-px", type=int, default=256)
  ap.add_argument("--distill-px", type=int, default=224)
  ap.add_argument("--out", default="gpu_paper_sizes", help="results file stem")
  args = ap.parse_args()
  info = _common.machine()
  kind = jax.devices()[0].device_kind
  rng = np.random.default_rng(0)
  rows: list[dict] = []
  payload = {"machine": info, "device_kind": kind, "results": rows}
  for dtype in args.dtypes:
    bf16 = dtype == "bfloat16"
    peak = _peak(kind, bf16, args.peak_tflops)
    # --- de-occlusion step at --deocc-px
    px = args.deocc_px
    dc = deocc_config(dtype)
    dc.local_size = px // 2
    init_fn, step_fn = deocclusion_stage.make_fns(dc, px)
    rows.append(
        _measure(
            "deocclusion",
            init_fn,
            step_fn,
            _batch(rng, args.deocc_batch, px, False),
            dtype,
            peak,
            args.iters,
        )
    )
    # --- distillation step at --distill-px
    px = args.distill_px
    g_init, _ = deocclusion_stage.make_fns(dc, px)
    g_params = jax.jit(g_init)(jax.random.key(1))["g"]
    teacher = distillation_stage.student_from_config(distill_config(dtype), 512, None)
    t_params = teacher.init(jax.random.key(2), jnp.zeros((1, px, px, 3)), train=False)

    def teacher_apply(p, x):
      e = teacher.apply(p, x, train=False)["embedding"].astype(jnp.float32)
      return {"embedding": e / jnp.linalg.norm(e, axis=-1, keepdims=True)}

    init_fn, step_fn = distillation_stage.make_fns(
        distill_config(dtype),
        dc,
        teacher_apply,
        512,
        8631,
        px,
    )
    rows.append(
        _measure(
            "distillation",
            init_fn,
            step_fn,
            _batch(rng, args.distill_batch, px, True),
            dtype,
            peak,
            args.iters,
            frozen={"teacher": t_params, "generator": g_params},
        )
    )
  lines = [
      "# GPU benchmark at the paper's sizes",
      f"Device: {kind} x {jax.device_count()}; {info['date']}; median of {args.iters} steps.",
      "",
      "| stage | dtype | px | batch | step (ms) | examples/s | TFLOP/step | MFU |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    fl = f"{r['flops_per_step'] / 1e12:.2f}" if r["flops_per_step"] else "n/a"
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a"
    lines.append(
        f"| {r['stage']} | {r['dtype']} | {r['px']} | {r['batch']} | "
        f"{1e3 * r['step_s']:.1f} | {r['examples_per_s']:.1f} | {fl} | {mfu} |"
    )
  _common.write(args.out, payload, "\n".join(lines))


if __name__ == "__main__":
  main()
