"""The base config: every field with its default and meaning.

Its values are the embedded default (synthetic identity faces, sized for a
2-core CPU); experiment files in ``configs/`` start from :func:`get_config`
(or :func:`deocc_jax.configs.paper.get_config`) and change fields, as
big_vision's configs build on ``big_vision.configs.common``.

Runs the whole method in sequence — teacher (ArcFace), de-occlusion
(generator + critics), the occlusion segmenter (blind de-occlusion),
distillation (hard and soft students), the paper's baseline (a student-sized
ArcFace recogniser pretrained on clean faces, fine-tuned on completed faces) —
then writes the paper's tables on held-out identities (``results/``).

One builder per section, each writing out every field of its section with its
default: the run's own sections here, the trained networks' in
``recognizer_sections.py`` / ``completion_sections.py``, the evaluation's and
the studies' in ``evaluation_sections.py`` (shared field groups explained in
``fields.py``). :func:`get_config` assembles them and locks the result: a field
no builder writes cannot be added later (no stage writes into the config).

Run:       python -m deocc_jax.main --config=configs/synthetic.py --workdir=DIR
Override:  --config.data.resolution=64 --config.distillation.num_steps=2000
Variants:  --config=configs/synthetic.py:cpu (see configs/synthetic.py)
"""

from __future__ import annotations

from typing import Callable

from ml_collections import ConfigDict

from deocc_jax.configs import completion_sections as completion
from deocc_jax.configs import evaluation_sections as evaluation
from deocc_jax.configs import recognizer_sections as recognizer


def get_config() -> ConfigDict:
  """The base config, assembled from the section builders, locked."""
  c = ConfigDict()
  c.seed = 0  # master seed: model init, data order, masks
  c.progress = True  # tqdm progress bars (process 0)
  c.stages = (
      "render_data",
      "teacher",
      "teacher_embeddings",
      "deocclusion",
      "segmentation",
      "distill_hard",
      "distill_soft",
      "pretrain_arcface",
      "finetune_arcface",
      "evaluate",
  )
  c.data = data()
  c.pipeline = pipeline()
  c.mesh = mesh()
  c.distributed = distributed()
  c.checkpoint = checkpoint()
  c.render = render()
  c.teacher = recognizer.teacher()
  c.teacher_embeddings = recognizer.teacher_embeddings()
  c.deocclusion = completion.deocclusion()
  c.deocclusion_gfc = completion.deocclusion_gfc()
  c.deocclusion_idgan = completion.deocclusion_idgan()
  c.distillation = recognizer.distillation()
  c.joint = recognizer.joint()
  c.segmentation = completion.segmentation()
  c.pretrain_arcface = recognizer.pretrain_arcface()
  c.finetune_arcface = recognizer.finetune_arcface()
  c.distill_ar = recognizer.distill_ar()
  c.evaluate = evaluation.evaluate()
  c.ablation = evaluation.ablation()
  c.lambda_sweep = evaluation.lambda_sweep()
  c.teacher_study = evaluation.teacher_study()
  c.lock()
  return c


def data() -> ConfigDict:
  """The faces: the synthetic identity faces (deocc_jax/data/synthetic_faces.py),
  CelebA or a folder; their occluders."""
  s = ConfigDict()
  s.source = "synthetic"  # 'synthetic' | 'celeba' | 'folder'
  s.partition = "official"  # celeba: 'official' (list_eval_partition.txt)
  # | 'random_6_1' (the paper's 6:1 image split)
  s.root = ""  # data folder for real sources
  s.landmarks_file = ""  # folder: optional 5-point file (CelebA row format)
  # a folder of decoded faces (<decoded_root>/<split>/, written by deocc-prepare
  # for this config): the same records, read without JPEG decoding / resizing
  s.decoded_root = ""
  s.identities = 1000  # synthetic identities (80/10/10 train/val/test)
  s.images_per_identity = 20  # images rendered per identity
  s.resolution = 32  # face side in pixels (32..256); CPU-sized
  s.seed = 0  # data seed: same seed, same faces
  s.coverage_range = (0.1, 0.3)  # fraction of the face occluded (mean ~1/5)
  s.categories = ("simple", "complex", "body", "hybrid")  # mask categories
  s.mask_library = ""  # optional folder of RGBA mask PNGs
  s.library_prob = 1.0  # rate at which library masks replace the procedural
  # occluders (when mask_library is set; paper: all)
  s.face_mask_prob = 0.2  # share of simple/complex/hybrid draws that are
  # landmark-fitted face masks (~1/2 coverage each)
  # shade / blur / noise occluders like the photo (data/photometric.py); off in
  # this CPU-sized default: it makes occluder synthesis several times slower
  # (benchmarks/results/occluder_paths_step.md).
  s.photometric = False
  # where occluders are drawn: 'device' (jax, beside the training step on the
  # accelerators, from a bank rendered once per stage; training/occluder_stream.py)
  # | 'host' (numpy, in the grain stream). Their cost side by side:
  # benchmarks/results/occluder_paths_step.md.
  s.occluders = "device"
  # A teacher pool (the VGGFace2 analogue): > 0 trains the ArcFace teacher on
  # this many further synthetic identities, disjoint from every split above
  # (0 = the teacher trains on the 'train' split, like the students).
  s.teacher_identities = 0
  s.teacher_images_per_identity = 0  # 0 = images_per_identity
  s.holdout_identities = 0  # CelebA: identities kept out of every training
  # stage (fraction < 1 or count), split 'heldout';
  # the synthetic splits are identity-disjoint already
  s.tuning_identities = 0  # CelebA: a second pool kept out of training,
  # split 'tuning', where lambda_sweep chooses lambda_i and T
  return s


def pipeline() -> ConfigDict:
  """The online pair pipeline (grain)."""
  s = ConfigDict()
  s.worker_count = 0  # grain worker processes (0 = in-process)
  s.read_threads = 0  # grain reader threads (0: the loop's thread; > 0 slow storage)
  s.flip = True  # horizontal flip augmentation
  s.max_shift_px = 2  # shift augmentation, pixels
  return s


def mesh() -> ConfigDict:
  """The devices the stages shard over."""
  s = ConfigDict()
  s.num_devices = 0  # 0 = every device of every host
  s.fsdp = False  # shard params / optimizer state over 'data'
  return s


def distributed() -> ConfigDict:
  """The hosts of a multi-process job (jax.distributed)."""
  s = ConfigDict()
  s.mode = "none"  # 'none' | 'auto' (SLURM / TPU) | 'manual'
  s.coordinator_address = ""
  s.num_processes = -1
  s.process_id = -1
  return s


def checkpoint() -> ConfigDict:
  """The stages' training checkpoints (Orbax)."""
  s = ConfigDict()
  s.keep = 2  # checkpoints kept per stage
  s.async_save = True  # Orbax async checkpointing
  return s


def render() -> ConfigDict:
  """Stage 'render_data': contact sheets and coverage statistics of the training pairs."""
  s = ConfigDict()
  s.per_category = 48  # faces per contact sheet
  s.columns = 8  # pairs per sheet row
  s.stats_examples = 400  # examples measured for coverage statistics
  return s


# section name -> its builder: what get_config assembles (tests/configs check it)
SECTIONS: dict[str, Callable[[], ConfigDict]] = {
    "data": data,
    "pipeline": pipeline,
    "mesh": mesh,
    "distributed": distributed,
    "checkpoint": checkpoint,
    "render": render,
    "teacher": recognizer.teacher,
    "teacher_embeddings": recognizer.teacher_embeddings,
    "deocclusion": completion.deocclusion,
    "deocclusion_gfc": completion.deocclusion_gfc,
    "deocclusion_idgan": completion.deocclusion_idgan,
    "distillation": recognizer.distillation,
    "joint": recognizer.joint,
    "segmentation": completion.segmentation,
    "pretrain_arcface": recognizer.pretrain_arcface,
    "finetune_arcface": recognizer.finetune_arcface,
    "distill_ar": recognizer.distill_ar,
    "evaluate": evaluation.evaluate,
    "ablation": evaluation.ablation,
    "lambda_sweep": evaluation.lambda_sweep,
    "teacher_study": evaluation.teacher_study,
}
