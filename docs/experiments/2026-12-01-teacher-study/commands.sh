#!/bin/bash
# The teacher-strength study's second run (commit 8539675; its settings are the
# config's defaults: the default teacher, disjoint 1,600- and 3,200-identity
# pools trained 1,600 / 3,200 steps; the soft student, lambda_i 0.001).
cd "$(dirname "$0")/../../.."  # the repository root
RUNS=${RUNS:-runs}  # where the workdirs and logs go
.venv/bin/python -m deocc_jax.main --config=configs/synthetic.py:teacher_study \
  --workdir=$RUNS/study2 > $RUNS/logs/study2.log 2>&1
# The student's budget: the 3,200-identity setting again with 1,600-step
# students (workdir: the run's G and data facts, and that setting's teacher,
# teacher embeddings and fine-tuned baseline copied from $RUNS/study2; its
# 400-step student removed), the same 6,000 held-out pairs.
mkdir -p $RUNS/study_long/teacher_study
cp -r $RUNS/study2/deocclusion $RUNS/study2/training_data_facts.npz $RUNS/study_long/
cp -r $RUNS/study2/teacher_study/2 $RUNS/study_long/teacher_study/0
rm -rf $RUNS/study_long/teacher_study/0/distill_soft
.venv/bin/python -m deocc_jax.main --config=configs/synthetic.py:teacher_study \
  --workdir=$RUNS/study_long \
  "--config.teacher_study.settings=('identities=3200,images=20,width=0.25,steps=3200',)" \
  --config.distillation.num_steps=1600 > $RUNS/logs/study_long.log 2>&1
# The control: fine-tuned baseline of 1,600 steps as well (copy of $RUNS/study_long,
# its fine-tuned baseline removed; the 1,600-step student is reused).
cp -r $RUNS/study_long $RUNS/study_ft
rm -rf $RUNS/study_ft/teacher_study/0/finetune_arcface $RUNS/study_ft/results
.venv/bin/python -m deocc_jax.main --config=configs/synthetic.py:teacher_study \
  --workdir=$RUNS/study_ft \
  "--config.teacher_study.settings=('identities=3200,images=20,width=0.25,steps=3200',)" \
  --config.distillation.num_steps=1600 --config.finetune_arcface.num_steps=1600 > $RUNS/logs/study_ft.log 2>&1
