"""The seed noise of the embedded default's key comparisons.

A finished run (``--source``) keeps its data, teacher and G (and the occlusion
segmenter); each new seed re-runs every stage after G -- the students, the
paper's baseline (its pretraining on clean faces included) and the
evaluation -- with ``--config.seed=N`` in a workdir of its own that starts from
copies of those stage folders. The evaluation sets do not depend on the seed
(``evaluate.seed``), so every run scores the same pairs in the same folds, and
each comparison is a per-fold paired difference per seed, then its mean and
sample std over seeds (:mod:`deocc_jax.evaluation.seed_spread`).

    python benchmarks/seed_spread.py run --source workdir/synthetic \
        --config=configs/synthetic.py:full --seeds 1 2 --out-root workdir/seeds
    python benchmarks/seed_spread.py report --dataset synthetic \
        --workdirs workdir/synthetic workdir/seeds/seed1 workdir/seeds/seed2

``report`` writes ``benchmarks/results/seed_spread.{md,json}`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Kept from the source run: everything up to and including G.
KEPT = (
    "data",
    "training_data_facts.npz",
    "teacher",
    "teacher_embeddings",
    "deocclusion",
    "segmentation",
)
RESEEDED = ("distill_hard", "distill_soft", "pretrain_arcface", "finetune_arcface", "evaluate")


def run(args: argparse.Namespace) -> None:
  for s in args.seeds:
    work = os.path.join(args.out_root, f"seed{s}")
    os.makedirs(work, exist_ok=True)
    for name in KEPT:
      src, dst = os.path.join(args.source, name), os.path.join(work, name)
      if not os.path.exists(src):
        raise SystemExit(f"{args.source} has no {name!r}: run the main job there first")
      if not os.path.exists(dst):
        (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)
    stages = "(" + ",".join(repr(x) for x in RESEEDED) + ",)"
    cmd = [
        sys.executable, "-m", "deocc_jax.main", f"--config={args.config}", f"--workdir={work}",
        f"--config.seed={s}", "--config.progress=False", f"--config.stages={stages}",
    ]  # fmt: skip
    print("==", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def report(args: argparse.Namespace) -> None:
  from deocc_jax.evaluation import seed_spread

  runs, seeds = [], []
  for w in args.workdirs:
    runs.append(json.load(open(os.path.join(w, "results", "results.json"))))
    seeds.append(json.load(open(os.path.join(w, "config.json")))["seed"])
  labels = [f"seed {s}" for s in seeds]
  if len(set(seeds)) != len(seeds):
    raise SystemExit(f"the workdirs' seeds repeat: {seeds}")
  rows = [seed_spread.spread(runs, a, b, args.dataset) for a, b in seed_spread.KEY_COMPARISONS]
  md = (
      f"# Seed spread of the key comparisons ({args.dataset})\n\n"
      f"Runs: {', '.join(f'`{w}` ({l})' for w, l in zip(args.workdirs, labels))}. "
      "Per-fold paired differences in points, one face of each pair masked, mixture of "
      "categories: per seed the mean ± std over folds (folds won), then the mean ± sample "
      "std of the per-seed means and the seeds won.\n\n" + seed_spread.markdown(rows, labels)
  )
  payload = {"machine": _common.machine(), "workdirs": args.workdirs, "seeds": seeds, "rows": rows}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump(payload, f, indent=2)
  with open(args.out + ".md", "w") as f:
    f.write(md)
  print(md)


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  r = sub.add_parser("run", help="re-run the stages after G with new seeds")
  r.add_argument("--source", required=True, help="a finished main-job workdir")
  r.add_argument("--config", default="configs/synthetic.py:full")
  r.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
  r.add_argument("--out-root", required=True)
  q = sub.add_parser("report", help="the table over finished workdirs")
  q.add_argument("--workdirs", nargs="+", required=True)
  q.add_argument("--dataset", default="synthetic")
  q.add_argument(
      "--out", default=os.path.join(_common.RESULTS, "seed_spread"), help="path without suffix"
  )
  args = p.parse_args(argv)
  (run if args.cmd == "run" else report)(args)


if __name__ == "__main__":
  main()
