"""Export a trained run for deployment: ``python -m deocc_jax.export --workdir=DIR --out=OUT``.

Writes the folder ``OUT`` (atomically: built next to it, then renamed):

* ``pipeline.jax_export`` -- a serialized :mod:`jax.export` artifact
  (StableHLO, symbolic batch size ``b``) of the whole recogniser on aligned
  faces: the occlusion segmenter predicts the mask, the generator G completes
  the face (``X*(1-M) + G(X, M)*M``, paper Eq. 1 / Sec. 3.2), the recogniser
  embeds it (L2-normalised). ``(b, R, R, 3)`` float32 in [-1, 1] ->
  ``(embedding (b, D), mask (b, R, R, 1), completed (b, R, R, 3))``. Without
  a segmenter (or G) in the run, the stages present are chained as
  :class:`deocc_jax.inference.FaceRecognizer` does (``input_kind``).
* ``embedder.jax_export`` ((b, R, R, 3) -> (b, D)), ``generator.jax_export``
  ((b, R, R, 3), (b, R, R, 1) -> completed (b, R, R, 3)) and
  ``segmenter.jax_export`` ((b, R, R, 3) -> binary mask (b, R, R, 1)).
* ``embedder.onnx``, ``generator.onnx``, ``segmenter.onnx`` (jax2onnx, dynamic
  batch ``B``), each checked against JAX with onnxruntime on a random batch;
  the max abs errors are in the metadata. A model that cannot be converted is
  listed under ``onnx.<name>.error`` with the converter's message and
  ``onnx.<name>.failing_op`` (the JAX primitive whose lowering failed); the
  others are still written.
* ``metadata.json``: the calibrated cosine threshold (``same = score >=
  threshold``; ``results/calibration.json`` of the run, "mixture, one face
  masked" protocol), the preprocessing (resolution, NHWC float32, value range
  ``u8 * 2/255 - 1``, the alignment template = the training crop's mean
  landmarks at R x R in CelebA order), the restored checkpoint steps, the
  files with their sizes and sha256, and the parity checks.

The frozen functions are traced once to a jaxpr, its constants (the trained
parameters) fetched to host memory and its dead code dropped (G's attention
flow image is not part of the completion); export and ONNX conversion run on
that jaxpr, so the artifacts are independent of the run's device mesh.
:mod:`deocc_jax.serving` loads the folder without Flax or the configs.

Exit status: 0, or 2 with one line ``error: ...`` (missing run / calibration /
checkpoint, ``OUT`` exists without ``--overwrite``).
"""

from __future__ import annotations

import hashlib
import json
import logging as py_logging
import os
import shutil
import sys
import tempfile
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["FORMAT", "export_run", "export_recognizer", "freeze", "to_onnx", "main", "run"]

FORMAT = "deocc-jax-export/1"
METADATA = "metadata.json"
CHECK_BATCH = 3  # faces in the parity checks (odd: no power-of-two coincidence)


# ------------------------------------------------------------------ frozen functions


def freeze(fn: Callable[..., Any]) -> Callable[..., Any]:
  """A pure function computing ``fn`` from a jaxpr with host (numpy) constants
  and without dead code.

  ``fn`` is traced at the shapes of each call of the result (symbolic dims
  allowed), so the result can itself be traced, exported or converted. Constants closed over by ``fn`` (e.g. parameters
  sharded over a device mesh) become numpy arrays; equations whose outputs
  are not used (G's attention-flow visualisation) are dropped.
  """
  import jax
  from jax.extend import core as jex

  def frozen(*args: Any) -> Any:
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    jaxpr = closed.jaxpr
    consts = [
        np.asarray(jax.device_get(c)) if isinstance(c, jax.Array) else c for c in closed.consts
    ]
    live = {v for v in jaxpr.outvars if not isinstance(v, jex.Literal)}
    keep = []
    for eqn in reversed(jaxpr.eqns):
      if eqn.effects or any(v in live for v in eqn.outvars if not isinstance(v, jex.DropVar)):
        keep.append(eqn)
        live.update(v for v in eqn.invars if not isinstance(v, jex.Literal))
    live_jaxpr = jaxpr.replace(eqns=keep[::-1])
    leaves = jex.jaxpr_as_fun(jex.ClosedJaxpr(live_jaxpr, consts))(*jax.tree_util.tree_leaves(args))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), leaves)

  return frozen


def _export(fn: Callable[..., Any], specs: Sequence[Any], platforms: Sequence[str]) -> bytes:
  """Serialized ``jax.export`` artifact of ``fn`` at ``specs``."""
  import jax
  from jax import export

  exp = export.export(jax.jit(fn), platforms=tuple(platforms))(*specs)
  return bytes(exp.serialize())


def to_onnx(fn: Callable[..., Any], shapes: Sequence[tuple[Any, ...]], name: str) -> bytes:
  """ONNX model (bytes) of ``fn`` via jax2onnx; ``shapes`` use ``'B'`` for the batch.

  jax2onnx's intermediate shape annotations (``value_info``) are dropped:
  0.17 annotates some NHWC convolution outputs with NCHW shapes, which makes
  onnxruntime refuse the model; onnxruntime infers the shapes itself.
  """
  for noisy in ("jax2onnx", "onnx_ir"):  # optional-plugin imports, untyped shape constants
    py_logging.getLogger(noisy).setLevel(py_logging.ERROR)
  import jax2onnx
  import onnx

  model = jax2onnx.to_onnx(fn, list(shapes), model_name=name)
  del model.graph.value_info[:]
  onnx.checker.check_model(model)
  return model.SerializeToString()


def _failing_op(e: BaseException) -> str | None:
  """The jax2onnx plugin (= JAX primitive) whose lowering raised ``e``, if any."""
  import traceback

  op = None
  for frame in traceback.extract_tb(e.__traceback__):
    if f"{os.sep}jax2onnx{os.sep}plugins{os.sep}" in frame.filename:
      op = os.path.splitext(os.path.basename(frame.filename))[0]
  return op


def _onnx_run(model: bytes, *inputs: np.ndarray) -> list[np.ndarray]:
  import onnxruntime as ort

  opts = ort.SessionOptions()
  opts.log_severity_level = 3
  sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
  return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), inputs)})


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _check_inputs(resolution: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A parity batch: random faces in [-1, 1] and masks covering a central block."""
  rng = np.random.default_rng(seed)
  r = resolution
  x = rng.uniform(-1, 1, (CHECK_BATCH, r, r, 3)).astype(np.float32)
  m = np.zeros((CHECK_BATCH, r, r, 1), np.float32)
  for i in range(CHECK_BATCH):
    top, left = rng.integers(0, r // 2, 2)
    m[i, top : top + r // 2, left : left + r // 3] = 1.0
  return x, m


# ------------------------------------------------------------------ the export


def export_run(
    workdir: str,
    out: str,
    recognizer: str = "student_soft",
    checkpoint: str | int = "latest",
    threshold: float | None = None,
    input_kind: str = "auto",
    onnx: bool = True,
    platforms: Sequence[str] = ("cpu",),
    overwrite: bool = False,
    config: Any = None,
) -> dict[str, Any]:
  """Exports ``recognizer`` of the run in ``workdir`` (with its G and segmenter)
  into the folder ``out``; returns the metadata written to ``out/metadata.json``.

  ``config`` defaults to the run's ``config.json``; ``threshold`` to the
  calibrated one (``results/calibration.json``). ``onnx=False`` skips the
  ONNX models (no jax2onnx / onnxruntime needed).
  """
  from deocc_jax import inference
  from deocc_jax.runs import workdir as workdir_lib

  _check_out(out, overwrite)
  workdir = os.fspath(workdir)
  if config is None:
    config = workdir_lib.read_config(workdir)
  workdir_lib.validate_config(config)
  fr = inference.FaceRecognizer.from_run(
      config=config,
      workdir=workdir,
      recognizer=recognizer,
      checkpoint=checkpoint,
      threshold=threshold,
      input_kind=input_kind,
  )
  return export_recognizer(
      fr,
      out,
      onnx=onnx,
      platforms=platforms,
      overwrite=overwrite,
      workdir=workdir,
      threshold_given=threshold is not None,
  )


def _check_out(out: str, overwrite: bool) -> str:
  out = os.path.abspath(os.fspath(out))
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} already exists (use --overwrite to replace it)")
  parent = os.path.dirname(out)
  if not os.path.isdir(parent):
    raise FileNotFoundError(f"output folder does not exist: {parent}")
  return out


def export_recognizer(
    fr: Any,
    out: str,
    onnx: bool = True,
    platforms: Sequence[str] = ("cpu",),
    overwrite: bool = False,
    workdir: str = "",
    threshold_given: bool = False,
) -> dict[str, Any]:
  """Exports a :class:`deocc_jax.inference.FaceRecognizer` built by ``from_run``
  (its ``models``, threshold and template) into ``out``; see :func:`export_run`."""
  import jax
  import jax.numpy as jnp
  from jax import export as jexport

  from deocc_jax import inference

  out = _check_out(out, overwrite)
  if fr.models is None:
    raise ValueError("export needs a FaceRecognizer built by FaceRecognizer.from_run")
  recognizer = fr.name
  threshold = fr.threshold if threshold_given else None
  models = fr.models
  r = fr.resolution
  kind = fr.input_kind
  embed = models.recognizers[recognizer]
  segment = models.segment if kind == "completed_predicted" else None
  complete = models.complete if kind in ("completed", "completed_predicted") else None

  b = jexport.symbolic_shape("b")[0]
  face = jax.ShapeDtypeStruct((b, r, r, 3), jnp.float32)
  mask = jax.ShapeDtypeStruct((b, r, r, 1), jnp.float32)

  def pipeline(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Aligned faces -> (embedding, mask used, completed face)."""
    m = segment(x) if segment is not None else jnp.zeros(x.shape[:3] + (1,), jnp.float32)
    y = complete(x, m) if (complete is not None and segment is not None) else x
    return embed(y), m, y

  parts: dict[str, tuple[Callable[..., Any], list[Any]]] = {
      "pipeline": (freeze(pipeline), [face]),
      "embedder": (freeze(embed), [face]),
  }
  if models.complete is not None:
    parts["generator"] = (freeze(models.complete), [face, mask])
  if models.segment is not None:
    parts["segmenter"] = (freeze(models.segment), [face])

  x_chk, m_chk = _check_inputs(r)
  chk_args = {
      "pipeline": (x_chk,),
      "embedder": (x_chk,),
      "generator": (x_chk, m_chk),
      "segmenter": (x_chk,),
  }
  raw_fns = {
      "pipeline": pipeline,
      "embedder": embed,
      "generator": models.complete,
      "segmenter": models.segment,
  }
  files: dict[str, bytes] = {}
  exports: dict[str, Any] = {}
  refs: dict[str, list[Any]] = {}
  for name, (fn, specs) in parts.items():
    data = _export(fn, specs, platforms)
    files[f"{name}.jax_export"] = data
    ref = refs[name] = jax.tree_util.tree_leaves(
        jax.device_get(jax.jit(raw_fns[name])(*chk_args[name]))
    )
    got = (
        jax.tree_util.tree_leaves(jexport.deserialize(data).call(*chk_args[name]))
        if "cpu" in platforms
        else None
    )
    exports[name] = {
        "file": f"{name}.jax_export",
        "inputs": [{"shape": ["b", *s.shape[1:]], "dtype": "float32"} for s in specs],
        "max_abs_error_vs_jax": None
        if got is None
        else max(
            float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(e, np.float64))))
            for g, e in zip(got, ref)
        ),
    }
  onnx_meta: dict[str, Any] = {}
  if onnx:
    for name in ("embedder", "generator", "segmenter"):
      if name not in parts:
        continue
      fn, specs = parts[name]
      shapes = [("B", *s.shape[1:]) for s in specs]
      try:
        data = to_onnx(fn, shapes, name)
      except Exception as e:  # noqa: BLE001 -- the converter's error is the report
        onnx_meta[name] = {
            "error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}",
            "failing_op": _failing_op(e),
        }
        continue
      ref = np.asarray(refs[name][0], np.float64)
      got = _onnx_run(data, *chk_args[name])[0]
      files[f"{name}.onnx"] = data
      onnx_meta[name] = {
          "file": f"{name}.onnx",
          "inputs": [
              {"name": n, "shape": list(s), "dtype": "float32"}
              for n, s in zip(("x", "mask"), shapes)
          ],
          "max_abs_error_vs_jax": float(np.max(np.abs(got.astype(np.float64) - ref))),
          "check_batch": CHECK_BATCH,
      }

  emb_dim = int(
      np.asarray(jax.eval_shape(embed, jax.ShapeDtypeStruct((1, r, r, 3), jnp.float32)).shape[-1])
  )
  meta = {
      "format": FORMAT,
      "recognizer": recognizer,
      "input_kind": kind,
      "threshold": fr.threshold,
      "threshold_source": (
          "given"
          if threshold is not None
          else f"{inference.calibration_path(workdir)}: thresholds[{recognizer!r}]"
          f"[{kind!r}] ({(fr.calibration or {}).get('condition', '')})"
      ),
      "decision": "same = cosine(embedding_a, embedding_b) >= threshold",
      "embedding_dim": emb_dim,
      "preprocessing": {
          "resolution": r,
          "layout": "NHWC float32 RGB",
          "value_range": [-1.0, 1.0],
          "from_uint8": "x = u8 * (2 / 255) - 1",
          "alignment": (
              "a least-squares similarity maps the 5 landmarks (x, y pixels: "
              "left eye, right eye, nose, left mouth, right mouth) onto "
              "template_landmarks (R x R crop); an aligned square crop is "
              "resized to R x R"
          ),
          "template_landmarks": np.asarray(fr.template_landmarks, np.float64).tolist(),
          "mask": "(b, R, R, 1) float32, 1 = occluded pixel",
      },
      "checkpoint_steps": dict(models.steps),
      "workdir": workdir,
      "jax_version": jax.__version__,
      "platforms": list(platforms),
      "jax_export": exports,
      "onnx": onnx_meta,
      "files": {n: {"bytes": len(d), "sha256": _sha256(d)} for n, d in sorted(files.items())},
  }
  _write_folder(out, files, meta, overwrite)
  return meta


def _write_folder(out: str, files: dict[str, bytes], meta: dict[str, Any], overwrite: bool) -> None:
  """Writes the files into a temporary sibling folder, then renames it to ``out``."""
  tmp = tempfile.mkdtemp(prefix=".tmp_export_", dir=os.path.dirname(out))
  try:
    for name, data in files.items():
      with open(os.path.join(tmp, name), "wb") as f:
        f.write(data)
    with open(os.path.join(tmp, METADATA), "w") as f:
      json.dump(meta, f, indent=2)
    if os.path.exists(out):
      if not overwrite:
        raise FileExistsError(f"{out} already exists (use --overwrite to replace it)")
      old = out + ".old"
      os.replace(out, old)
      os.replace(tmp, out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


# ------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m deocc_jax.export``; returns the exit status."""
  import argparse

  from deocc_jax import cli

  class _Parser(argparse.ArgumentParser):

    def error(self, message: str):  # one line, status 2, like the other CLIs
      cli.fail(f"{message} (see --help)")

  p = _Parser(
      prog="python -m deocc_jax.export",
      description="Export a trained run: jax.export (StableHLO) + ONNX + metadata.",
  )
  p.add_argument("--workdir", required=True, help="the trained (and evaluated) run's directory")
  p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
  p.add_argument(
      "--recognizer",
      default="student_soft",
      choices=(
          "student_soft",
          "student_hard",
          "teacher",
          "arcface_finetuned",
          "arcface_pretrained",
          "teacher_finetuned",
      ),
  )
  p.add_argument("--checkpoint", default="latest", help="latest | best | STEP (every model)")
  p.add_argument(
      "--threshold",
      type=float,
      default=None,
      help="cosine threshold (default: the run's results/calibration.json)",
  )
  p.add_argument(
      "--input_kind",
      default="auto",
      choices=("auto", "completed_predicted", "completed", "masked", "clean"),
  )
  p.add_argument(
      "--platforms", default="cpu", help="comma-separated jax.export platforms (cpu, cuda, tpu)"
  )
  p.add_argument("--no_onnx", action="store_true", help="skip the ONNX models")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
  args = p.parse_args(argv)
  platforms = tuple(s.strip() for s in args.platforms.split(",") if s.strip())

  def go() -> dict[str, Any]:
    try:
      return export_run(
          args.workdir,
          args.out,
          args.recognizer,
          args.checkpoint,
          args.threshold,
          args.input_kind,
          onnx=not args.no_onnx,
          platforms=platforms,
          overwrite=args.overwrite,
      )
    except (FileExistsError, ValueError, ImportError) as e:  # incl. bad calibration
      cli.fail(e, hard_exit=True)

  meta = cli.run_or_exit(go)
  summary = {
      "out": os.path.abspath(args.out),
      "recognizer": meta["recognizer"],
      "input_kind": meta["input_kind"],
      "threshold": meta["threshold"],
      "files": {n: f["bytes"] for n, f in meta["files"].items()},
      "onnx_max_abs_error": {
          n: o.get("max_abs_error_vs_jax", o.get("error")) for n, o in meta["onnx"].items()
      },
  }
  print(json.dumps(summary, indent=2))
  return 0


def run() -> None:
  """Console entry point (``deocc-export``): parses ``sys.argv``."""
  sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
  run()
