"""The two occluder paths of training, per batch, side by side in one run.

Usage::

    nice -n 10 python benchmarks/occluder_paths_step.py [--batches 15]

For each setting, exactly what a training stage runs on this machine
(``stage_spec.make_batches`` of the 'deocclusion' stage, the loop's
``batch_on_device`` on this process's mesh, XLA's default threads):

* ``data.occluders='host'``: ``next()`` of the grain iterator (render the
  synthetic face, augment, draw + composite the occluder in numpy), then the
  batch put on the mesh;
* ``data.occluders='device'``: ``next()`` (render, augment: no occluder),
  then the loop's jitted prepare function (occluders drawn, warped,
  composited on the device) after its compile.

Settings: 32 px, batch 32 with the embedded default's occluder settings
(``configs/synthetic.py``: photometric off), and 128 px, batch 8 with the
paper config's (photometric on; the rehearsal's size and batch).
Medians over ``--batches`` batches. Writes
``benchmarks/results/occluder_paths_step.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common  # noqa: E402
from absl import flags  # noqa: E402

from deocc_jax.configs import base  # noqa: E402
from deocc_jax.runs import factories
from deocc_jax.training import loop, occluder_stream, registry, stage_spec  # noqa: E402

PAIR_KEYS = ("masked", "mask", "clean", "identity")
SETTINGS = (  # (stage, keys the step reads, px, batch, photometric, whose settings)
    ("deocclusion", PAIR_KEYS, 32, 32, False, "embedded default (configs/synthetic.py)"),
    ("teacher", ("clean", "identity"), 32, 64, False, "embedded default (configs/synthetic.py)"),
    ("deocclusion", PAIR_KEYS, 128, 8, True, "paper config (photometric), rehearsal size"),
)


def _config(stage: str, px: int, batch: int, photometric: bool, occluders: str):
  c = base.get_config()
  c.data.resolution = px
  c.data.photometric = photometric
  c.data.occluders = occluders
  c.data.identities, c.data.images_per_identity = 100, 10
  c[stage].batch_size = batch
  return c


def _time(c, stage: str, keys: tuple[str, ...], n: int) -> dict:
  """Median seconds per batch: next() and the device part (put + prepare)."""
  t = time.perf_counter()
  it, _ = stage_spec.make_batches(c, c[stage], registry.get(stage))
  setup_s = time.perf_counter() - t
  mesh = factories.make_mesh(c)
  to_dev = loop.batch_on_device(
      "bench", mesh, loop.LoopConfig(num_steps=1, batch_keys=keys), getattr(it, "prepare", None)
  )
  t = time.perf_counter()
  jax.block_until_ready(to_dev(next(it), 0))  # compile (device) / warm-up
  first_s = time.perf_counter() - t
  nxt, dev = [], []
  for step in range(1, n + 1):
    t0 = time.perf_counter()
    host = next(it)
    t1 = time.perf_counter()
    jax.block_until_ready(to_dev(host, step))
    t2 = time.perf_counter()
    nxt.append(t1 - t0)
    dev.append(t2 - t1)
  tot = [a + b for a, b in zip(nxt, dev)]
  return {
      "setup_s": setup_s,
      "first_batch_s": first_s,
      "next_ms": 1e3 * _common.median(nxt),
      "device_ms": 1e3 * _common.median(dev),
      "total_ms": 1e3 * _common.median(tot),
  }


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser()
  ap.add_argument("--batches", type=int, default=15)
  ap.add_argument("--out-name", default="occluder_paths_step")
  args = ap.parse_args(argv)
  flags.FLAGS.mark_as_parsed()
  payload = {"machine": _common.machine(), "batches": args.batches, "rows": []}
  payload["xla_flags"] = os.environ.get("XLA_FLAGS", "")
  for stage, keys, px, batch, photometric, who in SETTINGS:
    row = {"stage": stage, "keys": list(keys), "px": px, "batch": batch}
    row.update(photometric=photometric, settings=who)
    for occ in ("host", "device"):
      row[occ] = _time(_config(stage, px, batch, photometric, occ), stage, keys, args.batches)
      print(stage, px, batch, occ, row[occ], flush=True)
    row["bank_grid"] = occluder_stream.bank_grid(px)
    payload["rows"].append(row)
  m = payload["machine"]
  md = [
      "# Occluders on the host vs on the device, per training batch",
      "",
      f"One run (`nice -n 10 python benchmarks/occluder_paths_step.py`), {m['cores']} cores "
      f"({m['cpu']}, load {m['loadavg_at_start']}), JAX on {len(m.get('jax_devices', []))} "
      f"CPU device(s), XLA_FLAGS={payload['xla_flags']!r}. Medians of {args.batches} batches of a "
      "stage's stream, as the training loop runs them: `next()` of the grain iterator (in "
      "the loop's thread), then the batch on the mesh (host path) or the jitted prepare "
      "function (device path: occluders drawn there; after its compile). The teacher reads "
      "only clean faces: its prepare function keeps no occluder (XLA drops the synthesis).",
      "",
      "| stage | px | batch | occluder settings | host: next() ms | host: to mesh ms | **host total ms** "
      "| device: next() ms | device: prepare ms | **device total ms** | device / host | "
      "device compile + first batch s | bank grid |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in payload["rows"]:
    h, d = r["host"], r["device"]
    md.append(
        f"| {r['stage']} | {r['px']} | {r['batch']} | {r['settings']} | {h['next_ms']:.1f} | "
        f"{h['device_ms']:.1f} | **{h['total_ms']:.1f}** | {d['next_ms']:.1f} | "
        f"{d['device_ms']:.1f} | **{d['total_ms']:.1f}** | {d['total_ms'] / h['total_ms']:.2f}x | "
        f"{d['first_batch_s']:.1f} | {r['bank_grid']} |"
    )
  md += [
      "",
      "On this CPU the device path runs the occluder synthesis on the same two cores as "
      "the step; on an accelerator it runs beside the step there and the host keeps only "
      "`next()` (see `benchmarks/results/device_occluders.md` for the synthesis alone).",
  ]
  _common.write(args.out_name, payload, "\n".join(md))
  return payload


if __name__ == "__main__":
  main()
