#!/bin/bash
# (workdirs: copies of the fresh-clone run of e21bac8 -- data, teacher, teacher_embeddings, deocclusion)
# lambda_i on the VALIDATION identities (evaluate.split=validation), the run's teacher and G (fresh-clone run of e21bac8)
cd "$(dirname "$0")/../../.."  # the repository root
RUNS=${RUNS:-runs}  # where the workdirs and logs go
.venv/bin/python -m deocc_jax.main --config=configs/synthetic.py:ablation --workdir=$RUNS/lam/a \
  --config.evaluate.split=validation --config.ablation.eval_every=200 \
  "--config.ablation.settings=('ce_pair_angle','ce_pair_angle_hard')" > $RUNS/lam/a.log 2>&1
.venv/bin/python -m deocc_jax.main --config=configs/synthetic.py:ablation --workdir=$RUNS/lam/b \
  --config.evaluate.split=validation --config.ablation.eval_every=200 --config.distillation.lambda_i=0.001 \
  "--config.ablation.settings=('ce_pair_angle_hard',)" > $RUNS/lam/b.log 2>&1
echo done > $RUNS/lam/done
