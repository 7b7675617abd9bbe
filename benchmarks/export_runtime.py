"""Export sizes and faces/s of each runtime: FaceRecognizer (JAX), the jax.export
artifact and onnxruntime, on the whole pipeline (segment -> complete -> embed).

  python benchmarks/export_runtime.py --workdir=RUN [--export=DIR] [--batch=64] [--repeats=7]

Exports the run (``deocc_jax.export``) into a temporary folder unless
``--export`` names an existing one, then times each runtime on the same
batch of aligned faces (after one warm-up call that compiles) and writes
``benchmarks/export_runtime.md``: artifact sizes in bytes and the median
faces/s over ``--repeats`` runs (min and max alongside).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

OUT_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export_runtime.md")


def _time(fn, repeats: int) -> list[float]:
  fn()  # warm-up: compiles
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t)
  return out


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True, help="a trained and evaluated run")
  p.add_argument("--export", default=None, help="an existing export folder (default: export now)")
  p.add_argument("--recognizer", default="student_soft")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--repeats", type=int, default=7)
  args = p.parse_args()

  from deocc_jax import export as export_lib
  from deocc_jax import inference, serving
  from deocc_jax.runs import workdir as workdir_lib

  info = _common.machine()
  fr = inference.FaceRecognizer.from_run(
      config=workdir_lib.read_config(args.workdir),
      workdir=args.workdir,
      recognizer=args.recognizer,
      batch_size=args.batch,
  )
  tmp = None
  folder = args.export
  export_s = None
  if folder is None:
    tmp = tempfile.mkdtemp(prefix="deocc_export_")
    folder = os.path.join(tmp, "model")
    t = time.perf_counter()
    export_lib.export_recognizer(fr, folder, workdir=args.workdir)
    export_s = time.perf_counter() - t
  rec_jax = serving.ExportedRecognizer(folder, runtime="jax", max_batch=args.batch)
  rec_onnx = serving.ExportedRecognizer(folder, runtime="onnx", max_batch=args.batch)
  meta = rec_jax.metadata
  r = fr.resolution
  x = np.random.default_rng(0).uniform(-1, 1, (args.batch, r, r, 3)).astype(np.float32)

  runs = {
      "FaceRecognizer (JAX, restored run)": lambda: fr.embed_prepared(fr.prepare(x).completed),
      "jax.export artifact (pipeline.jax_export)": lambda: rec_jax.embed_aligned(x),
      "onnxruntime (segmenter -> generator -> embedder .onnx)": lambda: rec_onnx.embed_aligned(x),
  }
  ref = runs["FaceRecognizer (JAX, restored run)"]()
  rows = []
  for name, fn in runs.items():
    err = float(np.abs(fn() - ref).max())
    ts = _time(fn, args.repeats)
    rows.append(
        (name, args.batch / _common.median(ts), args.batch / max(ts), args.batch / min(ts), err)
    )

  lines = [
      "# Export sizes and runtime speed",
      "",
      f"Run: `{args.workdir}` (recognizer `{meta['recognizer']}`, input_kind "
      f"`{meta['input_kind']}`, {r}x{r} faces, embedding {meta['embedding_dim']}-d); "
      f"`python benchmarks/export_runtime.py --workdir=...`.",
      f"Machine: {info['cpu']}, {info['cores']} cores (shared; load average at start "
      f"{info['loadavg_at_start']}), jax {info.get('jax')} on {len(info.get('jax_devices', []))} "
      f"device(s), {info['date']}.",
      ""
      if export_s is None
      else f"Export (restore excluded, with the parity checks): " f"{export_s:.1f} s.",
      "",
      "## Artifact sizes",
      "",
      "| file | bytes |",
      "|---|---:|",
  ]
  lines += [f"| {n} | {f['bytes']:,} |" for n, f in sorted(meta["files"].items())]
  lines += [
      "",
      f"## Faces/s, whole pipeline, batch {args.batch} (median of {args.repeats} runs after a "
      f"warm-up)",
      "",
      "| runtime | faces/s (median) | min | max | max abs embedding diff vs FaceRecognizer |",
      "|---|---:|---:|---:|---:|",
  ]
  lines += [f"| {n} | {med:.1f} | {lo:.1f} | {hi:.1f} | {e:.2e} |" for n, med, lo, hi, e in rows]
  lines += [
      "",
      "ONNX parity recorded at export (max abs error vs JAX, random batch of "
      f"{export_lib.CHECK_BATCH}): "
      + ", ".join(
          f"{n} {o.get('max_abs_error_vs_jax', o.get('error'))}" for n, o in meta["onnx"].items()
      )
      + ".",
  ]
  text = "\n".join(lines) + "\n"
  with open(OUT_MD, "w") as f:
    f.write(text)
  print(text)
  if tmp is not None:
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
