"""A small export folder in ``python -m deocc_jax.export``'s format, built in a
second: real ``jax.export`` (and ONNX) artifacts of toy segment -> complete ->
embed functions, so the HTTP server tests need no trained run."""

from __future__ import annotations

import json
import os

import numpy as np

RES = 16
DIM = 12
THRESHOLD = 0.25
TEMPLATE = [[5.0, 6.0], [11.0, 6.0], [8.0, 9.0], [5.5, 12.0], [10.5, 12.0]]


def toy_functions(res: int = RES, dim: int = DIM, seed: int = 0):
  """(segment, complete, embed, pipeline): jnp functions of aligned faces in [-1, 1]."""
  import jax.numpy as jnp

  w = np.random.default_rng(seed).normal(size=(res * res * 3, dim)).astype(np.float32)

  def segment(x):  # bright pixels are "occluded"
    return (jnp.mean(x, axis=-1, keepdims=True) > 0.6).astype(jnp.float32)

  def complete(x, m):  # occluded pixels filled with the face's mean
    return x * (1.0 - m) + m * jnp.mean(x, axis=(1, 2, 3), keepdims=True)

  def embed(x):
    e = jnp.reshape(x, (x.shape[0], -1)) @ w + 0.1
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)

  def pipeline(x):
    m = segment(x)
    y = complete(x, m)
    return embed(y), m, y

  return segment, complete, embed, pipeline


def write_toy_export(out: str, onnx: bool = True, res: int = RES, dim: int = DIM) -> str:
  """Writes the toy export into the new folder ``out``; returns ``out``."""
  import jax
  import jax.numpy as jnp
  from jax import export

  from deocc_jax import export as export_lib

  segment, complete, embed, pipeline = toy_functions(res, dim)
  b = export.symbolic_shape("b")[0]
  face = jax.ShapeDtypeStruct((b, res, res, 3), jnp.float32)
  mask = jax.ShapeDtypeStruct((b, res, res, 1), jnp.float32)
  parts = {
      "pipeline": (pipeline, [face]),
      "embedder": (embed, [face]),
      "generator": (complete, [face, mask]),
      "segmenter": (segment, [face]),
  }
  os.makedirs(out)
  for name, (fn, specs) in parts.items():
    data = export.export(jax.jit(fn), platforms=("cpu",))(*specs).serialize()
    with open(os.path.join(out, f"{name}.jax_export"), "wb") as f:
      f.write(bytes(data))
    if onnx and name != "pipeline":
      shapes = [("B", *s.shape[1:]) for s in specs]
      with open(os.path.join(out, f"{name}.onnx"), "wb") as f:
        f.write(export_lib.to_onnx(fn, shapes, name))
  meta = {
      "format": export_lib.FORMAT,
      "recognizer": "toy",
      "input_kind": "completed_predicted",
      "threshold": THRESHOLD,
      "embedding_dim": dim,
      "preprocessing": {"resolution": res, "template_landmarks": TEMPLATE},
      "onnx": {},
  }
  with open(os.path.join(out, "metadata.json"), "w") as f:
    json.dump(meta, f)
  return out
