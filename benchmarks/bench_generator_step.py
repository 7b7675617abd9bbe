"""Benchmark: one DeepFill v1 generator / critic training step, JAX vs PyTorch (CPU).

Times (median and min of ``--repeats`` interleaved rounds after ``--warmup`` rounds, wall clock):

* G step: generator forward, DeepFill reconstruction loss, completion, both
  critics on the completed image / its hole crop, WGAN generator loss,
  backward, Adam update of G.
* D step: both critics on real and completed (fixed) images + hole crops,
  WGAN critic loss + hole-restricted gradient penalty (double backward),
  backward, Adam update of the critics.

The PyTorch model is written here: the same layers (shapes, strides,
dilations, ELU / leaky ReLU), the same batched contextual attention (unfold /
bmm / fuse / masked softmax / bmm / fold, same FLOPs), the same losses. It is
only used for timing; its numerics are not compared.

JAX is timed twice: with the default critics (``fast_double_backward=True``:
the stride-2 convs' input gradient is computed by sub-pixel stride-1 convs
through a custom VJP) and with plain ``nn.Conv`` critics, whose lhs-dilated
input-gradient convs (and, in the gradient penalty, their weight gradients)
hit a slow XLA:CPU path.

A separate micro-benchmark times one 3x3 conv layer's weight gradient in JAX
(NHWC default, native NCHW, NHWC transposed to NCHW, the gradient written as
one explicit conv, bf16 matmul precision, bf16 inputs) and in PyTorch.

Usage:
  .venv/bin/python benchmarks/bench_generator_step.py [--sizes 64 128] [--batch 8]
      [--cnum 32] [--repeats 3] [--warmup 1] [--no-torch]
Writes benchmarks/results/generator_step.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np


def _median_time(fn: Callable[[], object], repeats: int, warmup: int) -> tuple[float, float]:
  """(first-call seconds, median seconds of ``repeats`` calls after ``warmup`` calls)."""
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  for _ in range(max(warmup - 1, 0)):
    fn()
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return first, statistics.median(ts)


def _make_batch(rng: np.random.Generator, b: int, s: int):
  x = rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32)
  m = np.zeros((b, s, s, 1), np.float32)
  for n in range(b):
    hh, ww = rng.integers(s // 4, s // 2 + 1, size=2)
    t, l = rng.integers(s // 8, s - hh - s // 8 + 1), rng.integers(s // 8, s - ww - s // 8 + 1)
    m[n, t : t + hh, l : l + ww] = 1.0
  return x, m


# ---------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------


def setup_jax(
    size: int,
    batch: int,
    cnum: int,
    dcnum: int,
    dtype_name: str,
    fast_critic: bool = True,
    d_only: bool = False,
) -> dict:
  """Build, compile and run once the JAX G / D steps; returns closures to time."""
  import jax
  import jax.numpy as jnp
  import optax

  from deocc_jax.losses.adversarial import (
      WGAN_GP_LAMBDA,
      discriminator_loss,
      generator_adversarial_loss,
      gradient_penalty,
  )
  from deocc_jax.losses.reconstruction import reconstruction_loss
  from deocc_jax.models.critics import GlobalLocalCritics, crop_hole_boxes, hole_boxes
  from deocc_jax.models.generator import InpaintGenerator, complete

  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]
  local = size // 2
  x_np, m_np = _make_batch(np.random.default_rng(0), batch, size)
  x, m = jnp.asarray(x_np), jnp.asarray(m_np)
  gen = InpaintGenerator(cnum=cnum, dtype=dtype)
  critics = GlobalLocalCritics(cnum=dcnum, dtype=dtype, fast_double_backward=fast_critic)
  gparams = gen.init(jax.random.PRNGKey(0), x, m)
  dparams = critics.init(jax.random.PRNGKey(1), x, x[:, :local, :local])
  gopt, dopt = optax.adam(1e-4, 0.5, 0.9), optax.adam(1e-4, 0.5, 0.9)
  gstate, dstate = gopt.init(gparams), dopt.init(dparams)

  def g_loss(gp, dp, x, m):
    out = gen.apply(gp, x, m)
    comp = complete(x, m, out.refined)
    boxes = hole_boxes(m)
    dg, dl = critics.apply(dp, comp, crop_hole_boxes(comp, m, local, boxes))
    adv = generator_adversarial_loss("wgan_gp", dg) + generator_adversarial_loss("wgan_gp", dl)
    rec, _ = reconstruction_loss("deepfill", x, out.coarse, out.refined, m)
    return rec + 1e-3 * adv, comp

  @jax.jit
  def g_step(gp, gs, dp, x, m):
    (loss, comp), grads = jax.value_and_grad(g_loss, has_aux=True)(gp, dp, x, m)
    upd, gs = gopt.update(grads, gs, gp)
    return optax.apply_updates(gp, upd), gs, loss, comp

  def d_loss(dp, x, comp, m, key):
    boxes = hole_boxes(m)
    lr = crop_hole_boxes(x, m, local, boxes)
    lf = crop_hole_boxes(comp, m, local, boxes)
    lm = crop_hole_boxes(m, m, local, boxes)
    dgr, dlr = critics.apply(dp, x, lr)
    dgf, dlf = critics.apply(dp, comp, lf)
    loss = discriminator_loss("wgan_gp", dgr, dgf) + discriminator_loss("wgan_gp", dlr, dlf)
    k1, k2 = jax.random.split(key)
    gp = gradient_penalty(lambda z: critics.apply(dp, z, method="global_score"), x, comp, m, k1)
    gp = gp + gradient_penalty(lambda z: critics.apply(dp, z, method="local_score"), lr, lf, lm, k2)
    return loss + WGAN_GP_LAMBDA * gp

  @jax.jit
  def d_step(dp, ds, x, comp, m, key):
    loss, grads = jax.value_and_grad(d_loss)(dp, x, comp, m, key)
    upd, ds = dopt.update(grads, ds, dp)
    return optax.apply_updates(dp, upd), ds, loss

  key = jax.random.PRNGKey(2)
  t0 = time.perf_counter()
  if d_only:
    comp = jax.jit(lambda gp: complete(x, m, gen.apply(gp, x, m).refined))(gparams)
    comp = jax.block_until_ready(comp)
    g_compile = float("nan")
  else:
    _, _, _, comp = jax.block_until_ready(g_step(gparams, gstate, dparams, x, m))
    g_compile = time.perf_counter() - t0

  def run_g():
    jax.block_until_ready(g_step(gparams, gstate, dparams, x, m))

  def run_d():
    jax.block_until_ready(d_step(dparams, dstate, x, comp, m, key))

  t0 = time.perf_counter()
  run_d()
  d_first = time.perf_counter() - t0
  n_g = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(gparams))
  n_d = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(dparams))
  steps = {"d": run_d} if d_only else {"g": run_g, "d": run_d}
  return dict(
      steps=steps, g_first_call_s=g_compile, d_first_call_s=d_first, g_params=n_g, d_params=n_d
  )


# ---------------------------------------------------------------------------
# PyTorch (timing twin, NCHW)
# ---------------------------------------------------------------------------


def setup_torch(size: int, batch: int, cnum: int, dcnum: int) -> dict:
  """Build the PyTorch twin and run each step once; returns closures to time."""
  import sys

  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
  from tests.helpers import torch_reference  # the one PyTorch reference module

  torch, F, Generator, Critic = torch_reference.deepfill_twin()
  torch.manual_seed(0)
  local = size // 2
  x_np, m_np = _make_batch(np.random.default_rng(0), batch, size)
  x = torch.tensor(x_np).permute(0, 3, 1, 2).contiguous()
  m = torch.tensor(m_np).permute(0, 3, 1, 2).contiguous()
  gen = Generator(cnum)
  dg_net = Critic(dcnum, (1, 2, 4, 4), size)
  dl_net = Critic(dcnum, (1, 2, 4, 8), local)
  gopt = torch.optim.Adam(gen.parameters(), 1e-4, betas=(0.5, 0.9))
  dopt = torch.optim.Adam(
      list(dg_net.parameters()) + list(dl_net.parameters()), 1e-4, betas=(0.5, 0.9)
  )
  boxes = []
  for n in range(batch):
    rows = np.where(m_np[n, :, :, 0].any(1))[0]
    cols = np.where(m_np[n, :, :, 0].any(0))[0]
    boxes.append((rows[0], cols[0], rows[-1] + 1, cols[-1] + 1))

  def crop(img):  # per-sample crop + bilinear resize (half-pixel), like the JAX version
    out = [
        F.interpolate(
            img[n : n + 1, :, t:b, l:r],
            size=(local, local),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        for n, (t, l, b, r) in enumerate(boxes)
    ]
    return torch.cat(out, 0)

  # spatial discounting weights (constant per mask; computed once)
  from deocc_jax.losses.reconstruction import spatial_discounting_weights

  wdisc = torch.tensor(np.asarray(spatial_discounting_weights(m_np))).permute(0, 3, 1, 2)

  def rec_loss(coarse, refined):
    n_hole = m.sum() * 3
    n_known = (1 - m).sum() * 3
    d1, d2 = (x - coarse).abs(), (x - refined).abs()
    l1 = (1.2 * (d1 * wdisc).sum() + (d2 * wdisc).sum()) / n_hole
    ae = (1.2 * (d1 * (1 - m)).sum() + (d2 * (1 - m)).sum()) / n_known
    return 1.2 * l1 + 1.2 * ae

  def g_step():
    gopt.zero_grad(set_to_none=True)
    coarse, refined = gen(x, m)
    comp = x * (1 - m) + refined * m
    adv = -dg_net(comp).mean() - dl_net(crop(comp)).mean()
    loss = rec_loss(coarse, refined) + 1e-3 * adv
    loss.backward()
    gopt.step()
    return comp.detach()

  t0 = time.perf_counter()
  comp = g_step()
  g_first = time.perf_counter() - t0

  def gp(net, real, fake, mask):
    alpha = torch.rand(real.shape[0], 1, 1, 1)
    z = (real + alpha * (fake - real)).requires_grad_(True)
    (g,) = torch.autograd.grad(net(z).sum(), z, create_graph=True)
    slopes = torch.sqrt((g**2 * mask).sum((1, 2, 3)) + 1e-12)
    return ((slopes - 1) ** 2).mean()

  def d_step():
    dopt.zero_grad(set_to_none=True)
    lr, lf, lm = crop(x), crop(comp), crop(m)
    loss = (dg_net(comp).mean() - dg_net(x).mean()) + (dl_net(lf).mean() - dl_net(lr).mean())
    loss = loss + 10.0 * (gp(dg_net, x, comp, m) + gp(dl_net, lr, lf, lm))
    loss.backward()
    dopt.step()

  t0 = time.perf_counter()
  d_step()
  d_first = time.perf_counter() - t0
  n_g = sum(p.numel() for p in gen.parameters())
  n_d = sum(p.numel() for p in dg_net.parameters()) + sum(p.numel() for p in dl_net.parameters())
  return dict(
      steps={"g": g_step, "d": d_step},
      g_first_call_s=g_first,
      d_first_call_s=d_first,
      g_params=n_g,
      d_params=n_d,
  )


# ---------------------------------------------------------------------------
# Conv weight-gradient micro-benchmark
# ---------------------------------------------------------------------------


def bench_conv_wgrad(
    batch: int, size: int, chans: int, repeats: int, warmup: int, with_torch: bool
) -> dict:
  import jax
  import jax.numpy as jnp

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, size, size, chans)).astype(np.float32))
  w = jnp.asarray(0.05 * rng.standard_normal((3, 3, chans, chans)).astype(np.float32))
  dy = jnp.asarray(rng.standard_normal((batch, size, size, chans)).astype(np.float32))
  nhwc = ("NHWC", "HWIO", "NHWC")
  nchw = ("NCHW", "OIHW", "NCHW")

  def conv(x, w, dn=nhwc):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)

  def wgrad_nhwc(x, w, dy):
    return jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]

  def xgrad_nhwc(x, w, dy):
    return jax.vjp(lambda x: conv(x, w), x)[1](dy)[0]

  def wgrad_nchw_native(xn, wn, dyn):
    return jax.vjp(lambda w: conv(xn, w, nchw), wn)[1](dyn)[0]

  def wgrad_nhwc_via_nchw(x, w, dy):
    xn, dyn = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(dy, (0, 3, 1, 2))
    g = jax.vjp(lambda w: conv(xn, w, nchw), jnp.transpose(w, (3, 2, 0, 1)))[1](dyn)[0]
    return jnp.transpose(g, (2, 3, 1, 0))

  def wgrad_explicit_conv(x, w, dy):
    # the weight gradient written as one conv: Cin as batch, N as contraction
    out = jax.lax.conv_general_dilated(
        x, dy, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("CHWN", "IHWO", "CHWN")
    )
    return jnp.transpose(out, (1, 2, 3, 0))

  xn, wn, dyn = (
      jnp.transpose(x, (0, 3, 1, 2)),
      jnp.transpose(w, (3, 2, 0, 1)),
      jnp.transpose(dy, (0, 3, 1, 2)),
  )
  ref = np.asarray(jax.jit(wgrad_nhwc)(x, w, dy))
  res = {}

  def jt(name, f, *args, check=None):
    f = jax.jit(f)
    out = np.asarray(f(*args))
    if check is not None:
      err = float(np.max(np.abs(check(out) - ref)) / np.max(np.abs(ref)))
      assert err < 1e-3, (name, err)
    res[name] = _median_time(lambda: jax.block_until_ready(f(*args)), repeats, warmup)[1]

  jt("jax_forward_nhwc", lambda x, w, dy: conv(x, w), x, w, dy)
  jt("jax_input_grad_nhwc", xgrad_nhwc, x, w, dy)
  jt("jax_weight_grad_nhwc", wgrad_nhwc, x, w, dy)
  jt(
      "jax_weight_grad_nchw_native",
      wgrad_nchw_native,
      xn,
      wn,
      dyn,
      check=lambda g: np.transpose(g, (2, 3, 1, 0)),
  )
  jt("jax_weight_grad_nhwc_transposed_to_nchw", wgrad_nhwc_via_nchw, x, w, dy, check=lambda g: g)
  jt("jax_weight_grad_explicit_conv", wgrad_explicit_conv, x, w, dy, check=lambda g: g)
  with jax.default_matmul_precision("bfloat16"):
    jt("jax_weight_grad_nhwc_precision_bf16", wgrad_nhwc, x, w, dy)
  jt(
      "jax_weight_grad_nhwc_bf16_inputs",
      wgrad_nhwc,
      x.astype(jnp.bfloat16),
      w.astype(jnp.bfloat16),
      dy.astype(jnp.bfloat16),
  )
  if with_torch:
    import torch

    tx, tdy = torch.tensor(np.asarray(xn)), torch.tensor(np.asarray(dyn))
    tw = torch.tensor(np.asarray(wn), requires_grad=True)
    res["torch_forward_nchw"] = _median_time(
        lambda: torch.nn.functional.conv2d(tx, tw.detach(), padding=1), repeats, warmup
    )[1]

    def twgrad():
      y = torch.nn.functional.conv2d(tx, tw, padding=1)
      return torch.autograd.grad(y, tw, tdy)[0]

    res["torch_forward_plus_weight_grad_nchw"] = _median_time(twgrad, repeats, warmup)[1]
  return res


# ---------------------------------------------------------------------------


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--cnum", type=int, default=32)
  ap.add_argument("--critic-cnum", type=int, default=64)
  ap.add_argument("--repeats", type=int, default=3, help="timed rounds")
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  ap.add_argument("--no-torch", action="store_true")
  ap.add_argument("--conv-size", type=int, default=64)
  ap.add_argument("--conv-channels", type=int, default=64)
  ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
  args = ap.parse_args()

  import jax

  torch_threads = None
  if not args.no_torch:
    import torch

    torch_threads = torch.get_num_threads()

  t_start = time.time()
  load_start = os.getloadavg()
  rows = []
  for s in args.sizes:
    # Interleaved timing: every round runs each variant once, so that load from
    # other processes hits all variants alike. 'jax': default critics
    # (fast_double_backward=True); 'jax_nnconv': critics with plain nn.Conv (D only).
    setups = {
        "jax": setup_jax(s, args.batch, args.cnum, args.critic_cnum, args.dtype, True),
        "jax_nnconv": setup_jax(
            s, args.batch, args.cnum, args.critic_cnum, args.dtype, False, d_only=True
        ),
    }
    if not args.no_torch:
      setups["torch"] = setup_torch(s, args.batch, args.cnum, args.critic_cnum)
    times = {(v, k): [] for v, st in setups.items() for k in st["steps"]}
    for rnd in range(args.warmup + args.repeats):
      for (v, k), lst in times.items():
        t0 = time.perf_counter()
        setups[v]["steps"][k]()
        if rnd >= args.warmup:
          lst.append(time.perf_counter() - t0)
    row = dict(size=s)
    for v, st in setups.items():
      row[v] = {k: v_ for k, v_ in st.items() if k != "steps"}
      for k in st["steps"]:
        row[v][f"{k}_step_s"] = statistics.median(times[(v, k)])
        row[v][f"{k}_step_min_s"] = min(times[(v, k)])
        row[v][f"{k}_step_all_s"] = times[(v, k)]
    rows.append(row)
    print(json.dumps(rows[-1]), flush=True)
  conv = bench_conv_wgrad(
      args.batch,
      args.conv_size,
      args.conv_channels,
      args.repeats + 2,
      args.warmup,
      not args.no_torch,
  )
  print(json.dumps(conv), flush=True)
  total = time.time() - t_start
  load_end = os.getloadavg()

  meta = dict(
      batch=args.batch,
      cnum=args.cnum,
      critic_cnum=args.critic_cnum,
      repeats=args.repeats,
      warmup=args.warmup,
      dtype=args.dtype,
      jax=jax.__version__,
      backend=jax.default_backend(),
      cpu_count=os.cpu_count(),
      torch_threads=torch_threads,
      platform=platform.platform(),
      total_runtime_s=total,
      loadavg_start=load_start,
      loadavg_end=load_end,
  )
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "generator_step.json").write_text(
      json.dumps(dict(meta=meta, steps=rows, conv_weight_grad=conv), indent=2)
  )
  lines = [
      "# DeepFill v1 generator / critic step: JAX vs PyTorch (CPU)",
      "",
      f"batch {args.batch}, G cnum {args.cnum}, critic cnum {args.critic_cnum}, "
      f"{args.dtype}, median of {args.repeats} after {args.warmup} warm-up; jax "
      f"{jax.__version__} ({jax.default_backend()}), {os.cpu_count()} CPUs, torch threads "
      f"{torch_threads}. Total runtime {total:.0f} s. Load average (1/5/15 min) at "
      f"start {'/'.join(f'{v:.1f}' for v in load_start)}, at end "
      f"{'/'.join(f'{v:.1f}' for v in load_end)}: with load above the core count "
      f"(other processes) the times, PyTorch's above all, are inflated and noisy.",
      "",
      "Rounds are interleaved (each round runs every variant once). JAX critics: "
      "`default` = `fast_double_backward=True` (sub-pixel input gradient, custom VJP); "
      "`nn.Conv` = `fast_double_backward=False` (XLA's own conv gradients).",
      "",
      "| size | step | JAX critics | JAX median (min) s | PyTorch median (min) s | "
      "JAX/PyTorch (median) | JAX first call (s, incl. compile) |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    for step in ("g", "d"):
      t = r.get("torch")
      tt = "-" if t is None else f"{t[f'{step}_step_s']:.3f} ({t[f'{step}_step_min_s']:.3f})"
      for variant, label in (("jax", "default"), ("jax_nnconv", "nn.Conv")):
        if f"{step}_step_s" not in r[variant]:
          continue
        j = r[variant][f"{step}_step_s"]
        ratio = "-" if t is None else f"{j / t[f'{step}_step_s']:.2f}"
        lines.append(
            f"| {r['size']} | {'G' if step == 'g' else 'D (WGAN-GP)'} | {label} | "
            f"{j:.3f} ({r[variant][f'{step}_step_min_s']:.3f}) | {tt} | {ratio} | "
            f"{r[variant][f'{step}_first_call_s']:.1f} |"
        )
  lines += [
      "",
      f"Parameters: G {rows[0]['jax']['g_params']:,} (JAX) / "
      f"{rows[0]['torch']['g_params'] if 'torch' in rows[0] else '-'} (torch); critics at "
      f"{rows[0]['size']} px {rows[0]['jax']['d_params']:,} / "
      f"{rows[0]['torch']['d_params'] if 'torch' in rows[0] else '-'}.",
      "",
      f"## One 3x3 conv, {args.conv_channels}->{args.conv_channels} ch, "
      f"{args.batch}x{args.conv_size}x{args.conv_size}",
      "",
      "| variant | ms |",
      "|---|---|",
  ]
  for k, v in conv.items():
    lines.append(f"| {k} | {v * 1e3:.1f} |")
  (out / "generator_step.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
