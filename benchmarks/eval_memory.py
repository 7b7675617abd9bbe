"""Peak host memory of the evaluation at 256 px with 1x and 4x the held-out faces.

Each measurement is a fresh subprocess that builds the held-out synthetic
verification and identification sets at 256 px, evaluates every input
(masked, mean-face and diffusion fills, G with the true and the predicted
mask) with two recognisers, the segmenter's IoU and the completion grid,
then reports its peak resident set size (``ru_maxrss``). Two designs, side
by side in one run:

* ``cached`` (the evaluation before it streamed): the protocols' in-memory
  sets (clean + occluded faces + masks of every face) and every input kind
  cached as a float32 array of all faces, embedded from there;
* ``streaming`` (``Evaluator`` today): faces read, occluded, filled and
  embedded batch by batch; only embeddings (N x D) are kept.

The models are small stand-ins (fixed random projections of 8x8-pooled
faces, a linear "G", a threshold segmenter) so the measurement is about the
evaluation's own arrays, not model sizes; the classical fills are the real
ones. Writes ``benchmarks/results/eval_memory.{json,md}``.

    python benchmarks/eval_memory.py [--faces 64] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

RES = 256
INPUTS = ("clean", "masked", "mean_fill", "diffusion_fill", "completed_predicted", "completed")


def _models():
  import types

  import jax.numpy as jnp
  import numpy as np

  from deocc_jax.runs.models import Models

  def recognizer(seed):
    w = jnp.asarray(np.random.default_rng(seed).normal(size=(32 * 32 * 3, 128)), jnp.float32)

    def embed(x):
      p = x.reshape(x.shape[0], 32, 8, 32, 8, 3).mean(axis=(2, 4)).reshape(x.shape[0], -1)
      e = jnp.tanh(p @ w / 30.0)
      return e / jnp.linalg.norm(e, axis=-1, keepdims=True)

    return embed

  mean = np.zeros((RES, RES, 3), np.float32)
  return Models(
      RES,
      {"teacher": recognizer(1), "student_hard": recognizer(2)},
      lambda x, m: x * (1 - m) + 0.25 * m * jnp.flip(x, axis=2),
      lambda x: (x.mean(-1, keepdims=True) > -0.1).astype(jnp.float32),
      mean,
      np.zeros((5, 2), np.float32),
      {},
      types.SimpleNamespace(name="arcface"),
      None,
  )


def _cached_evaluator(base):
  """The evaluation before streaming: every input kind of a view computed over
  all its faces and kept as one float32 array, then embedded."""

  class CachedEvaluator(base):

    def __init__(self, *a, **kw):
      super().__init__(*a, **kw)
      self.image_cache = {}

    def stream_verification(self, vs, inputs, grid_rows=0):
      pass

    def stream_identification(self, ids, inputs):
      pass

    def embed_view(self, recognizer, view, kind):
      key = (id(view), kind, recognizer)
      if key not in self._embeddings:
        if (id(view), kind) not in self.image_cache:
          self.image_cache[(id(view), kind)] = self.images(view, kind)
        self._embeddings[key] = self.map(
            self.models.recognizers[recognizer], self.image_cache[(id(view), kind)], recognizer
        )
      return self._embeddings[key]

  return CachedEvaluator


def child(design: str, faces: int, batch: int, diffusion_iters: int) -> dict:
  """One measurement (runs in its own process)."""
  from deocc_jax.configs import base as synthetic
  from deocc_jax.data import pipeline
  from deocc_jax.evaluation import evaluator as ev_lib
  from deocc_jax.evaluation import protocols, streaming
  from deocc_jax.evaluation.evaluators import identification as identification_eval
  from deocc_jax.evaluation.evaluators import segmentation as segmentation_eval
  from deocc_jax.evaluation.evaluators import verification as verification_eval
  from deocc_jax.runs import factories

  config = synthetic.get_config()
  mesh = factories.make_mesh(config)
  models = _models()
  # the held-out ('test') split of 1,280 identities x 2 images: 256 faces
  source = pipeline.SyntheticSplitSource.create("test", 1280, 2, RES, 0)
  assert len(source) >= faces, (len(source), faces)
  mask_cfg = factories.mask_config(config)
  rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  t0 = time.perf_counter()
  if design == "streaming":
    ev = ev_lib.Evaluator(models, mesh, batch, diffusion_iters)
    vs = streaming.verification_set(source, 600, 1234, mask_cfg, ("mixture",), faces)
    ids = streaming.identification_set(source, 1234, 1, faces, 6)
    ev.stream_verification(vs, INPUTS, 8)
  else:
    ev = _cached_evaluator(ev_lib.Evaluator)(models, mesh, batch, diffusion_iters)
    vs = protocols.synthetic_verification_set(source, 600, 1234, mask_cfg, ("mixture",), faces)
    ids = protocols.synthetic_identification_set(source, 1234, 1, faces, 6)
  res = verification_eval.results(ev, vs, INPUTS, ("simple", "complex"))
  seg = segmentation_eval.results(ev, vs.views, ("simple",))
  ident = identification_eval.results(ev, ids, INPUTS)
  seg.update(segmentation_eval.results(ev, ids.probes))
  if design == "streaming":
    grid = ev.grid(vs)
  else:  # the grid from the cached arrays
    view = vs.views["mixture"]
    grid = {"clean": vs.clean[:8], "masked": view.masked[:8], "mask": view.mask[:8]}
    for kind in ("mean_fill", "diffusion_fill", "completed_predicted", "completed"):
      grid[kind] = ev.image_cache[(id(view), kind)][:8]
  assert all(len(v) == 8 for v in grid.values())
  seconds = time.perf_counter() - t0
  acc = {
      r: {k: s["one"]["accuracy"] for k, s in per.items()}
      for r, per in res["results"]["mixture"].items()
  }
  return {
      "design": design,
      "faces": faces,
      "probes": int(sum(len(v) for v in ids.probe_labels.values())),
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "rss_before_sets_mb": rss0 / 1024,
      "seconds": seconds,
      "accuracy_one": acc,
      "segmentation_iou": seg,
      "rank1": {
          r: {s: {k: v["rank1"] for k, v in kinds.items()} for s, kinds in per.items()}
          for r, per in ident.items()
      },
  }


def measure(design: str, faces: int, batch: int, diffusion_iters: int) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  cmd = [
      sys.executable,
      os.path.abspath(__file__),
      "--child",
      design,
      "--faces",
      str(faces),
      "--batch",
      str(batch),
      "--diffusion-iters",
      str(diffusion_iters),
  ]
  out = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f"{design} {faces} faces failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--faces", type=int, default=64, help="1x the held-out faces (4x also runs)")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--diffusion-iters", type=int, default=10)
  p.add_argument("--child", default="")
  a = p.parse_args()
  if a.child:
    print(json.dumps(child(a.child, a.faces, a.batch, a.diffusion_iters)))
    return
  import _common

  rows = []
  for design in ("cached", "streaming"):
    for mult in (1, 4):
      r = measure(design, a.faces * mult, a.batch, a.diffusion_iters)
      print(
          f"{design:10s} {r['faces']:4d} faces: peak RSS {r['peak_rss_mb']:.0f} MB "
          f"({r['seconds']:.0f} s)",
          flush=True,
      )
      rows.append(r)
  by = {(r["design"], r["faces"]): r for r in rows}
  ratios = {
      d: by[(d, 4 * a.faces)]["peak_rss_mb"] / by[(d, a.faces)]["peak_rss_mb"]
      for d in ("cached", "streaming")
  }
  same = all(
      by[("cached", f)][k] == by[("streaming", f)][k]
      for f in (a.faces, 4 * a.faces)
      for k in ("accuracy_one", "segmentation_iou", "rank1")
  )
  payload = {
      "machine": _common.machine(),
      "resolution": RES,
      "batch_size": a.batch,
      "diffusion_iters": a.diffusion_iters,
      "rows": rows,
      "ratio_4x_over_1x": ratios,
      "streaming_within_10_percent": ratios["streaming"] <= 1.10,
      "same_numbers_both_designs": same,
  }
  md = [
      f"# Evaluation peak host memory at {RES} px (1x and 4x the held-out faces)",
      "",
      "Each row a fresh process: verification (mixture, 6 inputs, 2 recognisers), "
      "segmentation IoU, completion grid and AR-style identification on the held-out "
      f"synthetic faces; stand-in models; global batch {a.batch}. Peak RSS = ru_maxrss.",
      "",
      "| design | faces | identification probes | peak RSS (MB) | RSS before the sets (MB) | seconds |",
      "|---|---|---|---|---|---|",
  ]
  for r in rows:
    md.append(
        f"| {r['design']} | {r['faces']} | {r['probes']} | {r['peak_rss_mb']:.0f} | "
        f"{r['rss_before_sets_mb']:.0f} | {r['seconds']:.0f} |"
    )
  md += [
      "",
      f"Peak RSS 4x / 1x: cached {ratios['cached']:.2f}, streaming {ratios['streaming']:.2f} "
      f"(target <= 1.10: {'met' if ratios['streaming'] <= 1.10 else 'NOT met'}). "
      f"Accuracies, IoU and rank-1 identical in both designs: {same}.",
  ]
  _common.write("eval_memory", payload, "\n".join(md))


if __name__ == "__main__":
  main()
