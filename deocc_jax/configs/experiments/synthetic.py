"""The embedded default: synthetic identity faces, sized for a 2-core CPU.

Runs the whole method in sequence -- teacher (ArcFace), de-occlusion
(generator + critics), the occlusion segmenter (blind de-occlusion),
distillation (hard and soft students), the paper's baseline (a student-sized
ArcFace pretrained on clean faces, fine-tuned on completed faces) --
then writes the paper's tables on held-out identities (``results/``). Every
field and its default: ``deocc_jax/configs/base.py``.

The default's schedule (teacher 150 steps, G 100, segmenter 150, students
100, the baseline 150 + 50; 3,000 evaluation pairs) fits README command (a)
in 20 minutes on 2 CPU cores; ``:full`` is the README's tables.

Run:       python -m deocc_jax.main --config=configs/synthetic.py --workdir=DIR
Override:  --config.data.resolution=64 --config.distillation.num_steps=2000
Variants (after a colon, several joined by commas):
  :full      the full comparison of the README's tables: teacher and the
             baseline's pretraining 400 steps, G and the students 400, the
             segmenter 300, the baseline's fine-tuning 200, 6,000 evaluation
             pairs (30-50 min on 2 cores); with :all_baselines for the
             'teacher fine-tuned' row
  :cpu       a laptop / CI CPU: the default, smaller still
  :ablation  the loss ablation of Fig. 5 (one student per loss setting, each
             evaluated every ``ablation.eval_every`` steps on held-out
             identities). Point --workdir at a finished main-job run to reuse
             its teacher and generator (those stages resume and are skipped):
             python -m deocc_jax.main --config=configs/synthetic.py:ablation --workdir=DIR
  :all_baselines  adds stage 'finetune_teacher': the teacher fine-tuned on
             completed faces, an extra row beside the paper's baseline
             (a student-sized ArcFace pretrained on clean faces, fine-tuned)
  :teacher_study  the teacher-strength study (config.teacher_study): per
             setting a teacher on a larger disjoint pool / with more capacity,
             the fine-tuned baseline and the student from it, on the run's G
"""

from __future__ import annotations

import ml_collections

from deocc_jax import configs
from deocc_jax.configs import base


def _full(c: ml_collections.ConfigDict) -> None:
  c.teacher.num_steps = 400
  c.pretrain_arcface.num_steps = 400  # the teacher's recipe
  c.deocclusion.num_steps = 400
  c.segmentation.num_steps = 300
  c.distillation.num_steps = 400
  c.finetune_arcface.num_steps = 200  # half the students' steps
  c.evaluate.num_pairs = 6000  # LFW-sized: 10 folds x (300 + 300)


def _cpu(c: ml_collections.ConfigDict) -> None:
  c.data.identities = 300
  c.teacher.num_steps = 100
  c.pretrain_arcface.num_steps = 100  # the teacher's recipe
  c.deocclusion.num_steps = 50
  c.distillation.num_steps = 50
  c.finetune_arcface.num_steps = 25  # half the students' steps
  c.evaluate.num_pairs = 2000


def _ablation(c: ml_collections.ConfigDict) -> None:
  c.stages = ("teacher", "teacher_embeddings", "deocclusion", "ablation")


def _teacher_study(c: ml_collections.ConfigDict) -> None:
  c.stages = ("deocclusion", "teacher_study")


def _all_baselines(c: ml_collections.ConfigDict) -> None:
  stages = list(c.stages)
  stages.insert(stages.index("finetune_arcface") + 1, "finetune_teacher")
  c.stages = tuple(stages)


VARIANTS = {
    "full": _full,
    "cpu": _cpu,
    "ablation": _ablation,
    "teacher_study": _teacher_study,
    "all_baselines": _all_baselines,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return configs.apply_variants(base.get_config(), arg, VARIANTS, "configs/synthetic.py")
