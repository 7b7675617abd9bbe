"""Difficulty of the synthetic set: Fisherfaces on clean vs masked faces.

Writes benchmarks/results/synthetic_difficulty.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from deocc_jax.data.difficulty import measure_difficulty  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--identities", type=int, default=500)
  ap.add_argument("--images", type=int, default=10)
  ap.add_argument("--resolution", type=int, default=32)
  args = ap.parse_args()
  res = measure_difficulty(args.identities, args.images, args.resolution)
  n_test = round(0.1 * args.identities)
  rows = []
  for cond in [
      "clean",
      "masked_mixed",
      "masked_simple",
      "masked_complex",
      "masked_body",
      "masked_hybrid",
  ]:
    rows.append(f"| {cond} | {res['rank1/' + cond]:.3f} | {res['verification/' + cond]:.3f} |")
  md = "\n".join(
      [
          "# Synthetic set difficulty (Fisherfaces baseline)",
          f"PCA(150) + LDA(64) fit on the clean faces of {args.identities - 2 * n_test} training "
          f"identities; evaluated on {n_test} held-out test identities x {args.images} images at "
          f"{args.resolution} px. Rank-1: gallery = first clean image of each identity, probes = "
          "the rest (clean, or masked with the given category). Verification: balanced "
          "clean-vs-probe pairs, cosine, best threshold.",
          "",
          f"Chance rank-1 = {1 / n_test:.3f}.",
          "",
          "| probes | rank-1 | verification acc. |",
          "|---|---|---|",
          *rows,
      ]
  )
  _common.write("synthetic_difficulty", {"args": vars(args), "results": res}, md)


if __name__ == "__main__":
  main()
