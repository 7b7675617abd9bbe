"""The completion grid (``completions_<set>.png``): the first faces of a
verification set's mixture, clean, masked, true and predicted masks, and every
fill the run can make, side by side."""

from __future__ import annotations

import os

import numpy as np

from deocc_jax.evaluation import protocols, report
from deocc_jax.evaluation.evaluator import Evaluator


def write(ev: Evaluator, vs: protocols.VerificationSet, out_dir: str, n: int = 8) -> None:
  """The first ``n`` faces of the mixture: clean, masked, masks, every fill
  (kept by the evaluator's pass; no other face is held)."""
  cols = dict(ev.grid(vs, n))
  scale = max(1, 96 // cols["clean"].shape[1])  # nearest-neighbour zoom: small faces stay visible
  cols = {k: np.repeat(np.repeat(v, scale, axis=1), scale, axis=2) for k, v in cols.items()}
  report.write_completion_grid(
      cols, os.path.join(out_dir, f"completions_{vs.name}.png"), max_rows=n
  )
