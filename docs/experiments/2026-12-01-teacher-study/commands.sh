#!/bin/bash
# The teacher-strength study's second run (commit 8539675; its settings are the
# config's defaults: the default teacher, disjoint 1,600- and 3,200-identity
# pools trained 1,600 / 3,200 steps; the soft student, lambda_i 0.001).
cd /work/main
.venv/bin/python -m deocc_jax.main --config=configs/synthetic.py:teacher_study \
  --workdir=/work/study2 > /work/logs/study2.log 2>&1
# The student's budget: the 3,200-identity setting again with 1,600-step
# students (workdir: the run's G and data facts, and that setting's teacher,
# teacher embeddings and fine-tuned baseline copied from /work/study2; its
# 400-step student removed), the same 6,000 held-out pairs.
mkdir -p /work/study_long/teacher_study
cp -r /work/study2/deocclusion /work/study2/training_data_facts.npz /work/study_long/
cp -r /work/study2/teacher_study/2 /work/study_long/teacher_study/0
rm -rf /work/study_long/teacher_study/0/distill_soft
.venv/bin/python -m deocc_jax.main --config=configs/synthetic.py:teacher_study \
  --workdir=/work/study_long \
  "--config.teacher_study.settings=('identities=3200,images=20,width=0.25,steps=3200',)" \
  --config.distillation.num_steps=1600 > /work/logs/study_long.log 2>&1
# The control: fine-tuned baseline of 1,600 steps as well (copy of /work/study_long,
# its fine-tuned baseline removed; the 1,600-step student is reused).
cp -r /work/study_long /work/study_ft
rm -rf /work/study_ft/teacher_study/0/finetune_arcface /work/study_ft/results
.venv/bin/python -m deocc_jax.main --config=configs/synthetic.py:teacher_study \
  --workdir=/work/study_ft \
  "--config.teacher_study.settings=('identities=3200,images=20,width=0.25,steps=3200',)" \
  --config.distillation.num_steps=1600 --config.finetune_arcface.num_steps=1600 > /work/logs/study_ft.log 2>&1
