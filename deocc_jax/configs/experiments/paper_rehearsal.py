"""Rehearsal of the paper's path before renting a cluster (minutes on a CPU).

    python -m deocc_jax.main --config=configs/paper_rehearsal.py --workdir=DIR

Stage ``rehearsal_data`` (``deocc_jax/data/rehearsal.py``) writes a miniature
CelebA (img_align_celeba/ + identity_CelebA.txt + list_landmarks_align_celeba.txt
+ list_eval_partition.txt), LFW (per-person folders + pairs.txt, 10 folds) and
AR (``m-001-01.bmp`` naming) in their native formats from synthetic identities,
a VGGFace2 ResNet-50 PyTorch state dict (published layout, 8,631 classes,
random weights; needs torch) and the baseline's student-sized ArcFace IResNet
(arcface_torch layout), both converted with ``deocc_jax.convert``. Then every
stage of ``configs/paper_celeba.py`` runs on them unchanged -- the same code,
the published teacher, the 6:1 image split with held-out identities, the
epoch schedules resolved from the data size, the fine-tuned teacher baseline,
the evaluation on the held-out identities, LFW and AR, and the Fig. 5
ablation -- with step counts, batches and the widths of the networks trained
here shrunk. Two processes:

    launch/two_process_cpu.sh configs/paper_rehearsal.py DIR
"""

import ml_collections

from deocc_jax.configs import paper

BATCH = 8  # global batches: one face per device of an 8-device job


def rehearsal() -> ml_collections.ConfigDict:
  """Stage 'rehearsal_data': the miniature datasets it writes (data/rehearsal.py)."""
  s = ml_collections.ConfigDict()
  s.root = ""  # '' = <workdir>/rehearsal_data
  s.celeba_identities = 36  # 20 held out (2 per verification fold) + 16 trained
  s.images_per_identity = 2  # a matched pair per held-out identity
  s.lfw_folds = 10  # pairs.txt: 10 folds x (1 matched + 1 mismatched)
  s.ar_people = 3
  s.face_resolution = 178  # CelebA's aligned crop width
  # The baseline's converted ArcFace (finetune_arcface.path): an IResNet of the
  # student's size (the paper: "similar size with our student"), iresnet18's
  # depth at the rehearsal student's quarter widths.
  s.arcface_layers = (2, 2, 2, 2)
  s.arcface_widths = (16, 32, 64, 128)
  s.arcface_features = 128
  # Table 1's VGGFace and SphereFace rows (evaluate.pretrained_recognizers, with
  # the ArcFace): the published layouts at an eighth of their widths.
  s.vggface_widths = (8, 16, 32, 64, 64)
  s.vggface_fc_features = 512
  s.sphereface_widths = (8, 16, 32, 64)
  s.sphereface_features = 64
  s.seed = 0
  return s


def get_config() -> ml_collections.ConfigDict:
  c = paper.get_config()
  # 'finetune_teacher' (the VGGFace2 teacher fine-tuned, an extra row, not the
  # paper's) runs the code of 'finetune_arcface' on another converted network:
  # left out, it saves a ResNet-50 gradient and an evaluation pass.
  c.stages = ("rehearsal_data",) + tuple(s for s in c.stages if s != "finetune_teacher")
  c.progress = False

  with c.unlocked():  # the base config is locked: this experiment's own section
    c.rehearsal = rehearsal()

  # the paper: 256. The networks trained here cost a quarter of 128 px's; the
  # converted ones see their own crops (224 / 112 px) at any frame size.
  c.data.resolution = 64
  c.data.holdout_identities = 20  # the paper config: 1,000
  c.data.tuning_identities = 0  # the paper config: 500 (16 identities train here)
  c.pipeline.worker_count = 0
  c.pipeline.max_shift_px = 2
  c.checkpoint.keep = 1
  c.teacher_embeddings.batch_size = 16

  # Tiny step counts (epochs = 0: num_steps as given; the epoch path is
  # resolved all the same: decay points, lr scaled from base_batch_size).
  for name in ("deocclusion", "segmentation", "distillation", "finetune_arcface"):
    s = c[name]
    s.epochs = 0
    s.num_steps = 2
    s.batch_size = BATCH
    s.log_every = 1
    s.checkpoint_every = 2
  c.deocclusion.sample_every = 2
  # Table 2's GFC and IDGAN completions: one step each at their base config's
  # miniature widths (the paper config's are 32 / 64); the students and the
  # baseline retrained on each completion run their base sections' steps.
  for name in ("deocclusion_gfc", "deocclusion_idgan"):
    s = c[name]
    s.epochs, s.num_steps, s.batch_size = 0, 1, BATCH
    s.log_every = s.checkpoint_every = 1
    s.base, s.critic_cnum, s.local_size = 8, 16, 32
  c.deocclusion_gfc.parser_width = 8
  c.deocclusion.local_size = 32  # half the face, as 128 of 256 px
  # Networks trained here at a quarter width (CPU minutes; XLA:CPU conv
  # gradients are slow): same code, the paper's widths are config values.
  # The teacher is the published VGGFace2 ResNet-50, whole.
  c.deocclusion.cnum = 8  # paper: 32
  c.deocclusion.n_critic = 2  # DeepFill: 5 (a lax.scan: same compile for any count)
  c.deocclusion.critic_cnum = 16  # DeepFill: 64
  c.distillation.width = 0.25  # paper: the full ResNet-18
  c.segmentation.width = 8
  c.distillation.angle_block_size = 4  # the blocked angle loss, blocks of 4 anchors
  c.distill_ar.num_steps = 1  # AR's distillation pass on the miniature AR's session 1
  c.distill_ar.batch_size = BATCH
  c.distill_ar.log_every = 1
  c.distill_ar.checkpoint_every = 1
  c.finetune_arcface.warmup_steps = 0

  c.evaluate.batch_size = 8
  # the 9 recognisers retrained per completion: only their Table 2 cell's clean
  # faces and completion, not every input (the paper config: 'all')
  c.evaluate.retrained_inputs = "own"
  c.evaluate.num_pairs = 20  # 10 folds x (1 + 1) on the 20 held-out identities
  c.evaluate.categories = ()  # per-category tables: the mixture column only
  c.evaluate.diffusion_iters = 20
  c.evaluate.probes_per_identity = 1
  c.evaluate.landmark_detector = ""  # the miniature ships landmark files
  # The paper identifies on AR only; rank-1 on the held-out identities (the
  # same code on any source) is exercised by the synthetic runs' tests.
  c.evaluate.identification = False
  # Table 1's RPCA / GL columns and SR row at miniature size (a few seconds).
  c.evaluate.classical.recognizers = ("pca", "gpca", "lpp", "sr")  # the paper config's
  c.evaluate.classical.dims, c.evaluate.classical.lpp_pca_dims = 8, 12  # of ~26 faces
  c.evaluate.classical.sr_iters = 100
  f = c.evaluate.classical_fill
  f.library_faces, f.rpca_max_iters, f.gl_neighbours, f.gl_num_iters = 4, 3, 2, 10

  # One setting, the one with every loss term (each setting runs the same code
  # with other weights; the tests of the synthetic runs train two).
  c.ablation.settings = ("ce_pair_angle_soft",)
  c.ablation.epochs = 0
  c.ablation.num_steps = 1
  c.ablation.eval_every = 1
  c.ablation.num_pairs = 20
  return c
