"""Relational losses (Eq. 13 distance, Eqs. 14-15 angle): JAX vs RKD-style PyTorch on CPU.

Forward + backward (gradient w.r.t. the student) wall time, median of repeats,
in one run side by side. Memory:

* JAX: XLA's compiled ``memory_analysis()`` of the jitted value-and-grad,
  ``temp + output`` bytes (arguments excluded) - a static, exact figure of the
  buffers XLA allocates, available without running (used for the configs
  that are too big or too slow to run).
* PyTorch: peak RSS (``VmHWM``) of a fresh child process running one
  forward + backward, minus the child's RSS after building the inputs.

PyTorch reference = RKD (lenscloth/RKD ``metric/loss.py``) formulation written
here: distance via the clamped Gram ``pdist`` and ``smooth_l1_loss``; angle
via the ``B x B x D`` normalised differences and a batched matmul.

The angle loss at B = 128 and 512 is timed side by side: JAX ``block_size=None``
("direct", automatic tiles), JAX ``block_size=K`` and torch, interleaved within
each repeat (warm-up excluded), medians; the load average is recorded before
and after each row since the machine is shared.

Usage: python benchmarks/bench_relational_losses.py [--repeats 5] [--full]
(``--full`` also times the B=4096 blocked angle loss, minutes here).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

D = 512


def _torch_losses():
  import torch
  import torch.nn.functional as F

  def pdist(e, eps=1e-12):
    sq = e.pow(2).sum(1)
    res = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
    res[range(len(e)), range(len(e))] = 0
    return res

  def distance(s, t):
    with torch.no_grad():
      td = pdist(t)
      td = td / td[td > 0].mean()
    d = pdist(s)
    d = d / d[d > 0].mean()
    return F.smooth_l1_loss(d, td)

  def angle(s, t):
    with torch.no_grad():
      td = F.normalize(t.unsqueeze(0) - t.unsqueeze(1), p=2, dim=2)
      ta = torch.bmm(td, td.transpose(1, 2)).view(-1)
    sd = F.normalize(s.unsqueeze(0) - s.unsqueeze(1), p=2, dim=2)
    sa = torch.bmm(sd, sd.transpose(1, 2)).view(-1)
    return F.smooth_l1_loss(sa, ta)

  return {"distance": distance, "angle": angle}


def _torch_data(b, seed=0):
  import numpy as np
  import torch

  rng = np.random.default_rng(seed)
  s = torch.tensor(rng.normal(size=(b, D)).astype("float32"), requires_grad=True)
  t = torch.tensor(rng.normal(size=(b, D)).astype("float32"))
  return s, t


def _torch_time(kind, b, repeats):
  fn = _torch_losses()[kind]
  s, t = _torch_data(b)
  times, val = [], None
  for _ in range(repeats + 1):
    s.grad = None
    t0 = time.perf_counter()
    loss = fn(s, t)
    loss.backward()
    times.append(time.perf_counter() - t0)
    val = float(loss.detach())
  return _common.median(times[1:]), val


def _proc_status_kib(field):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise KeyError(field)


def _torch_mem_child(kind, b, q):
  # VmHWM (peak RSS of this address space) is reset by exec, unlike ru_maxrss,
  # which a spawned child inherits from the forked parent.
  s, t = _torch_data(b)
  base = _proc_status_kib("VmRSS")
  loss = _torch_losses()[kind](s, t)
  loss.backward()
  q.put((_proc_status_kib("VmHWM") - base) * 1024)


def _torch_mem(kind, b):
  ctx = mp.get_context("spawn")
  q = ctx.Queue()
  p = ctx.Process(target=_torch_mem_child, args=(kind, b, q))
  p.start()
  p.join()
  return q.get() if p.exitcode == 0 else None


def _jax_fn(kind, block):
  import jax
  from deocc_jax.losses import relational as R

  if kind == "distance":
    f = lambda s, t: R.distance_loss(t, s)
  else:
    f = lambda s, t: R.angle_loss(t, s, block_size=block)
  return jax.jit(jax.value_and_grad(f))


def _jax_mem(fn, s, t):
  ma = fn.lower(s, t).compile().memory_analysis()
  return int(ma.temp_size_in_bytes + ma.output_size_in_bytes)


def _jax_time(fn, s, t, repeats):
  import jax

  jax.block_until_ready(fn(s, t))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    v, g = fn(s, t)
    jax.block_until_ready(g)
    times.append(time.perf_counter() - t0)
  return _common.median(times), float(v)


def _jax_once(fn, s, t):
  import jax

  t0 = time.perf_counter()
  v, g = fn(s, t)
  jax.block_until_ready(g)
  return time.perf_counter() - t0, float(v)


def _torch_once(fn, s, t):
  s.grad = None
  t0 = time.perf_counter()
  loss = fn(s, t)
  loss.backward()
  return time.perf_counter() - t0, float(loss.detach())


def _load():
  return [round(x, 2) for x in os.getloadavg()]


def _angle_side_by_side(b, block, repeats):
  """JAX direct, JAX blocked and torch angle, interleaved per repeat; medians."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(b, D)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(b, D)), jnp.float32)
  ts, tt = _torch_data(b)
  tfn = _torch_losses()["angle"]
  fns = {None: _jax_fn("angle", None), block: _jax_fn("angle", block)}
  mem = {k: _jax_mem(f, s, t) for k, f in fns.items()}
  load0 = _load()
  for f in fns.values():  # warm-up (compile)
    _jax_once(f, s, t)
  _torch_once(tfn, ts, tt)
  times = {None: [], block: [], "torch": []}
  vals = {}
  for _ in range(repeats):
    for k, f in fns.items():
      dt, vals[k] = _jax_once(f, s, t)
      times[k].append(dt)
    dt, vals["torch"] = _torch_once(tfn, ts, tt)
    times["torch"].append(dt)
  load1 = _load()
  torch_s = _common.median(times["torch"])
  torch_rss = _gib(_torch_mem("angle", b))
  rows = []
  for k in (None, block):
    jax_s = _common.median(times[k])
    rows.append(
        {
            "loss": "angle",
            "B": b,
            "D": D,
            "jax_form": "direct (auto tiles)" if k is None else f"blocked K={k}",
            "jax_mem_gib": _gib(mem[k]),
            "jax_s": jax_s,
            "jax_value": vals[k],
            "jax_times": [round(x, 4) for x in times[k]],
            "torch_s": torch_s,
            "torch_value": vals["torch"],
            "torch_times": [round(x, 4) for x in times["torch"]],
            "torch_peak_rss_gib": torch_rss,
            "jax_over_torch": round(jax_s / torch_s, 4),
            "speedup_vs_torch": round(torch_s / jax_s, 2),
            "loadavg_before": load0,
            "loadavg_after": load1,
            "jax_note": "interleaved with torch",
        }
    )
  return rows


def _gib(x):
  return None if x is None else round(x / 2**30, 3)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--block", type=int, default=16)
  ap.add_argument("--full", action="store_true")
  args = ap.parse_args()
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  info = _common.machine()
  info["torch"] = torch.__version__
  info["torch_threads"] = torch.get_num_threads()
  rows = []
  for b in (128, 512, 2048):
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.normal(size=(b, D)), jnp.float32)
    t = jnp.asarray(rng.normal(size=(b, D)), jnp.float32)
    # Distance loss (cheap): JAX then torch, medians.
    fn = _jax_fn("distance", None)
    row = {
        "loss": "distance",
        "B": b,
        "D": D,
        "jax_form": "direct",
        "jax_mem_gib": _gib(_jax_mem(fn, s, t)),
        "loadavg_before": _load(),
    }
    row["jax_s"], row["jax_value"] = _jax_time(fn, s, t, args.repeats)
    row["torch_s"], row["torch_value"] = _torch_time("distance", b, args.repeats)
    row["torch_peak_rss_gib"] = _gib(_torch_mem("distance", b))
    row["loadavg_after"] = _load()
    row["jax_over_torch"] = round(row["jax_s"] / row["torch_s"], 4)
    row["speedup_vs_torch"] = round(row["torch_s"] / row["jax_s"], 2)
    rows.append(row)
    print(row, flush=True)
    if b <= 512:
      for row in _angle_side_by_side(b, args.block, args.repeats):
        rows.append(row)
        print(row, flush=True)
    else:
      for block in (None, args.block):
        fn = _jax_fn("angle", block)
        row = {
            "loss": "angle",
            "B": b,
            "D": D,
            "jax_form": "direct (auto tiles)" if block is None else f"blocked K={block}",
            "jax_mem_gib": _gib(_jax_mem(fn, s, t)),
            "loadavg_before": _load(),
        }
        if block is None:
          row["jax_s"], row["jax_value"] = _jax_time(fn, s, t, 1)
          row["jax_note"] = "1 timed run after warm-up"
        else:
          row["jax_s"] = None
          row["jax_note"] = "same tiles as direct at this B; not timed"
        row["loadavg_after"] = _load()
        row["torch_s"] = None
        row["torch_note"] = (
            f"not run: B x B x D + B^3 tensors = "
            f"{(b * b * D * 3 + b ** 3 * 2) * 4 / 2 ** 30:.0f} GiB"
        )
        rows.append(row)
        print(row, flush=True)
  # B = 4096 angle: memory (compile, no run) unless --full.
  b = 4096
  s = jnp.zeros((b, D), jnp.float32)
  for block in (None, 4, args.block):
    fn = _jax_fn("angle", block)
    row = {
        "loss": "angle",
        "B": b,
        "D": D,
        "jax_form": "direct (auto tiles)" if block is None else f"blocked K={block}",
        "jax_mem_gib": _gib(_jax_mem(fn, s, s)),
        "jax_s": None,
        "jax_note": "compiled memory only, not run",
        "torch_s": None,
        "torch_note": "not run: B^3 = 256 GiB",
    }
    if args.full and block is None:
      s = jnp.asarray(np.random.default_rng(0).normal(size=(b, D)), jnp.float32)
      row["loadavg_before"] = _load()
      row["jax_s"], row["jax_value"] = _jax_time(fn, s, s * 0.5 + 1.0, 1)
      row["loadavg_after"] = _load()
      row["jax_note"] = "1 timed run after warm-up"
    rows.append(row)
    print(row, flush=True)
  info["loadavg_at_end"] = _load()

  def fmt(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"

  md = [
      "# Relational losses: JAX vs RKD-style PyTorch (CPU, forward + backward)",
      "",
      f"Machine: {info['cpu']}, {info['cores']} cores (shared), load avg at start "
      f"{info['loadavg_at_start']}, at end {info['loadavg_at_end']}; jax {info.get('jax')}, torch {info['torch']} "
      f"({info['torch_threads']} threads); {info['date']}.",
      "",
      "Times: median wall seconds of forward + backward (student gradient); "
      "angle at B <= 512: JAX direct, JAX blocked and torch interleaved in each "
      f"repeat ({args.repeats} repeats after a warm-up). "
      "JAX `block_size=None` evaluates the B^3 triplets in automatic cache-sized "
      "tiles (16 anchors x 16 rows x B at B = 512), `block_size=K` caps a tile at "
      "K B^2 elements (same tiles as None at B >= 128 for K >= 1). "
      "JAX memory: compiled memory_analysis temp+output. "
      "Torch memory: peak RSS increase of a fresh child process.",
      "",
      "| loss | B | JAX form | JAX s | torch s | JAX/torch | speed-up | JAX mem GiB | "
      "torch peak RSS GiB | load avg before -> after | note |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    note = "; ".join(x for x in (r.get("jax_note"), r.get("torch_note")) if x)
    md.append(
        f"| {r['loss']} | {r['B']} | {r['jax_form']} | {fmt(r.get('jax_s'))} | "
        f"{fmt(r.get('torch_s'))} | {fmt(r.get('jax_over_torch'), 4)} | "
        f"{fmt(r.get('speedup_vs_torch'), 1)} | {fmt(r.get('jax_mem_gib'))} | "
        f"{fmt(r.get('torch_peak_rss_gib'))} | "
        f"{r.get('loadavg_before', '-')} -> {r.get('loadavg_after', '-')} | {note} |"
    )
  _common.write("bench_relational_losses", {"machine": info, "rows": rows}, "\n".join(md))


if __name__ == "__main__":
  main()
