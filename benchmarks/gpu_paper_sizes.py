"""GPU benchmark at the paper's sizes: the paper config's steps timed, with MFU.

One command, a few minutes on one accelerator::

    python benchmarks/gpu_paper_sizes.py            # writes benchmarks/results/gpu_paper_sizes.{md,json}

Times the training steps of ``configs/paper_celeba.py`` exactly as the scale
model (``benchmarks/scale_model.py``) analyses them, built by
``benchmarks/paper_steps.py`` from the ``:gpu8`` variant at its per-device
batch (global batch / 8): the de-occlusion step (DeepFill-v1 G cnum 32,
critics cnum 64, 256 px, WGAN-GP with 5 critic updates per G update, batch
16), the same without contextual attention, the occlusion segmenter, the
hard / soft distillation steps (frozen G, the frozen VGGFace2 ResNet-50
teacher, the ResNet-18 student, batch 16), the ResNet-50 fine-tuned with
ArcFace, and the teacher's embedding of clean faces (batch 64). dtypes:
``configured`` (bf16 where ``:gpu8`` sets it: de-occlusion and distillation)
and ``float32`` (everything fp32).

MFU = FLOPs per step (XLA's cost analysis of the compiled step, the critic
scan counted ``n_critic`` times: ``paper_steps.analyse``) / (median step time
x the device's peak dense FLOP/s: H100/H200 SXM 989 TFLOP/s bf16, 494 TF32;
A100 312 / 156; override with --peak-tflops). Runs on CPU too, at toy sizes
(``--px 32 --batch 1 --stages segmentation``), which the tests do.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import paper_steps  # noqa: E402

PEAKS_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0)}
DTYPES = ("configured", "float32")


def _peak(device_kind: str, bf16: bool, override: float | None) -> float | None:
  if override:
    return override * 1e12
  for name, (b, f) in PEAKS_TFLOPS.items():
    if name in device_kind:
      return (b if bf16 else f) * 1e12
  return None


def config_for(dtype: str):
  """The ``:gpu8`` paper config; ``float32``: its bf16 sections set to fp32."""
  if dtype not in DTYPES:
    raise ValueError(f"--dtypes: {dtype!r} is not one of {DTYPES}")
  c = paper_steps.paper_config("gpu8")
  if dtype == "float32":
    c.deocclusion.dtype = "float32"
    c.distillation.dtype = "float32"
  return c


def measure(step: paper_steps.Step, peak_for, iters: int) -> dict:
  """Median step time, throughput, FLOPs and MFU of one jitted, donating step."""
  key = jax.random.key(0)
  state = jax.jit(step.init)(key)
  frozen = jax.jit(step.frozen_init)(jax.random.key(1))
  batch = jax.device_put(step.batch(np.random.default_rng(0)))
  t = time.perf_counter()
  compiled = jax.jit(step.fn, donate_argnums=(0,)).lower(state, batch, *frozen).compile()
  compile_s = time.perf_counter() - t
  stats = paper_steps.analyse(step, compiled)
  times = []
  for i in range(iters + 2):  # two warm-up steps
    t = time.perf_counter()
    state, m = compiled(state, batch, *frozen)
    jax.block_until_ready((state, m))
    if i >= 2:
      times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  peak = peak_for(step.dtype == "bfloat16")
  return {
      "stage": step.stage,
      "dtype": step.dtype,
      "batch": step.batch_size,
      "px": step.px,
      "step_s": step_s,
      "examples_per_s": step.batch_size / step_s,
      "flops_per_step": stats["flops"],
      "flops_counted_by_xla": stats["flops_counted"],
      "mfu": stats["flops"] / step_s / peak if peak else None,
      "peak_flops": peak,
      "compile_s": compile_s,
      "device_memory_bytes_compiled": stats["device_memory_bytes"],
  }


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--iters", type=int, default=20)
  ap.add_argument("--stages", nargs="+", default=list(paper_steps.STAGES))
  ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), help=f"of {DTYPES}")
  ap.add_argument("--px", type=int, default=None, help="default: config.data.resolution (256)")
  ap.add_argument("--batch", type=int, default=None, help="per-device batch (default: :gpu8's)")
  ap.add_argument("--devices", type=int, default=8, help="devices the global batch splits over")
  ap.add_argument("--peak-tflops", type=float, default=None)
  ap.add_argument("--out", default="gpu_paper_sizes", help="results file stem (or path)")
  args = ap.parse_args(argv)
  info = _common.machine()
  kind = jax.devices()[0].device_kind
  rows: list[dict] = []
  payload = {"machine": info, "device_kind": kind, "iters": args.iters, "results": rows}
  for dtype in args.dtypes:
    cfg = config_for(dtype)
    px = args.px or int(cfg.data.resolution)
    for stage in args.stages:
      b = args.batch or paper_steps.per_device_batch(cfg, stage, args.devices)
      step = paper_steps.build_step(cfg, stage, px, b)
      row = measure(step, lambda bf16: _peak(kind, bf16, args.peak_tflops), args.iters)
      row["dtypes"] = dtype
      rows.append(row)
      print(f"{stage} {dtype}: {1e3 * row['step_s']:.1f} ms/step", flush=True)
  lines = [
      "# GPU benchmark at the paper's sizes",
      f"Device: {kind} x {jax.device_count()}; {info['date']}; median of {args.iters} steps "
      "after two; the steps of configs/paper_celeba.py:gpu8 per device "
      "(benchmarks/paper_steps.py).",
      "",
      "| stage | dtypes | compute | px | batch | step (ms) | examples/s | TFLOP/step | MFU |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    fl = f"{r['flops_per_step'] / 1e12:.3f}" if r["flops_per_step"] else "n/a"
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a"
    lines.append(
        f"| {r['stage']} | {r['dtypes']} | {r['dtype']} | {r['px']} | {r['batch']} | "
        f"{1e3 * r['step_s']:.1f} | {r['examples_per_s']:.1f} | {fl} | {mfu} |"
    )
  _common.write(args.out, payload, "\n".join(lines))


if __name__ == "__main__":
  main()
