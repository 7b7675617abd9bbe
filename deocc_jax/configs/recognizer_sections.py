"""Config sections of the recognisers trained here: the teacher, the students,
the paper's ArcFace baseline and AR's distillation pass; every field written out.

Each builder returns one section of :func:`deocc_jax.configs.base.get_config`.
The optimizer / loop fields' meanings: ``deocc_jax/configs/fields.py``.
Schedules from epochs (``training/optim.py`` resolve_schedule): ``epochs`` > 0
sets num_steps = epochs x (train examples // batch_size); ``decay_every_epochs``
> 0 sets decay_every; ``base_batch_size`` > 0 scales lr by batch_size /
base_batch_size.
"""

from __future__ import annotations

from ml_collections import ConfigDict


def teacher() -> ConfigDict:
  """Stage 0: the ArcFace teacher on clean faces (or a pretrained one)."""
  s = ConfigDict()
  s.kind = "arcface"  # 'arcface' (trained here) | 'dlib' | 'converted'
  s.path = ""  # dlib .dat file or converted-teacher dir
  # how a pretrained teacher sees the training faces: 'auto' = its own input
  # protocol (VGGFace2's 224 crop, facenet's 160, insightface's 112 template,
  # dlib's 150 chip), warped from the training crop by the mean training
  # landmarks (teachers/api.py:in_frame); 'resize' = the whole crop resized
  s.input_protocol = "auto"
  s.width = 0.25  # ResNet-18 width multiplier
  s.small_input_stem = True  # 3x3 stride-1 stem for small faces
  s.embed_dim = 128  # embedding size
  s.arcface_scale = 30.0  # ArcFace s
  s.arcface_margin = 0.3  # ArcFace m (radians)
  s.batch_size = 64
  s.num_steps = 150  # the default fits 20 min on 2 cores; :full runs 400
  s.epochs = 0  # 0 = use num_steps
  s.base_batch_size = 0  # 0 = lr as given
  s.optimizer = "adam"
  s.lr = 2e-3
  s.momentum = 0.9  # sgd
  s.nesterov = False  # sgd
  s.b1 = 0.9  # adam
  s.b2 = 0.999  # adam
  s.weight_decay = 0.0
  s.grad_clip = 0.0  # no clipping
  s.schedule = "cosine"
  s.decay_factor = 0.1  # schedule 'step'
  s.warmup_steps = 50
  s.decay_every_epochs = 0  # schedule 'step'
  s.warmup_epochs = 0  # 0 = warmup_steps as given
  s.log_every = 50
  s.checkpoint_every = 200
  s.sample_every = 0  # no sample grids
  s.best_metric = ""  # keep the latest checkpoints
  s.best_mode = "min"
  s.dtype = "float32"  # compute dtype ('bfloat16' on GPU / TPU); params fp32
  return s


def teacher_embeddings() -> ConfigDict:
  """The teacher's embeddings of the training faces (Eq. 18's centroids)."""
  s = ConfigDict()
  s.batch_size = 256  # global batch of the extraction job
  return s


def distillation() -> ConfigDict:
  """Stage 2: distillation into the ResNet-18 student (Eq. 16); stages
  distill_hard / distill_soft."""
  s = ConfigDict()
  s.instance = "hard"  # set per stage: distill_hard / distill_soft
  # the de-occlusion stage whose G completes the students' faces (Table 2:
  # stages distill_<hard|soft>_<noca|gfc|idgan> set it to theirs)
  s.generator = "deocclusion"
  s.width = 0.25  # student ResNet-18 width multiplier
  s.small_input_stem = True
  s.use_ce = True  # L_CE term (classifier over train identities)
  # L_CE: 'teacher' = the paper's (text after Eq. 16): a student head over the
  # teacher's classes trained on softmax(teacher logits / T), Hinton KD with the
  # T^2 factor (the ArcFace teacher's class outputs are its scaled cosines
  # arcface_scale * cos; dlib has none); 'labels' = CE with the identity labels.
  s.ce_target = "labels"  # 'labels' | 'teacher'
  s.temperature = 4.0  # T for ce_target='teacher' (paper: unstated)
  # Instance term (Eq. 12 / 17): the L1 distance ||t - s||_1, summed over the D
  # embedding dimensions. Its per-sample gradient has norm lambda_i sqrt(D), so
  # lambda_i ~ 1/sqrt(D) would give it unit size (the paper config's 0.02).
  # 0.001 was chosen on the synthetic *validation* identities, never the test
  # ones (docs/experiments/2026-12-01-lambda-i-validation.md). The paper
  # leaves lambda_i unstated.
  s.lambda_i = 0.001
  s.lambda_p = 1.0  # pair-wise distance term (paper: 1)
  s.lambda_t = 2.0  # triplet-wise angle term (paper: 2)
  s.sharded_relational = False  # shard_map tuple blocks per device
  s.angle_block_size = 0  # anchors per block (0 = direct)
  s.batch_size = 64
  s.num_steps = 100  # :full 400
  s.epochs = 0  # 0 = use num_steps
  s.base_batch_size = 0  # > 0: lr was chosen for this global batch
  s.optimizer = "sgd"
  s.lr = 0.1
  s.momentum = 0.9
  s.nesterov = False
  s.b1 = 0.9  # adam
  s.b2 = 0.999  # adam
  s.weight_decay = 5e-4
  s.grad_clip = 0.0  # no clipping
  s.schedule = "cosine"
  s.decay_factor = 0.1  # schedule 'step'
  s.warmup_steps = 50
  s.decay_every_epochs = 0  # schedule 'step': decay every this many epochs
  s.warmup_epochs = 0  # 0 = warmup_steps as given
  s.log_every = 50
  s.checkpoint_every = 200
  s.sample_every = 0  # no sample grids
  s.best_metric = ""  # keep the latest checkpoints
  s.best_mode = "min"
  s.dtype = "float32"  # the student's compute dtype
  return s


def joint() -> ConfigDict:
  """The optional end-to-end stage (Eq. 6); add "joint" to config.stages to run it."""
  s = ConfigDict()
  s.instance = "hard"  # instance loss of the joint objective
  s.init_from_stages = True  # start from deocclusion + distill_<instance>
  s.lambda_gan = 1.0  # weight of the generator's own losses
  s.lambda_distill = 0.1  # weight of Eq. 16 flowing into G and the student
  s.batch_size = 32
  s.num_steps = 200
  s.log_every = 50
  s.checkpoint_every = 200
  s.sample_every = 0  # no sample grids
  s.best_metric = ""  # keep the latest checkpoints
  s.best_mode = "min"
  return s


def pretrain_arcface() -> ConfigDict:
  """The paper's baseline, part 1 (Sec. 4.2, "Distillation vs Fine-tune"): an
  ArcFace recogniser of the student's size (ResNet-18 at the student's width,
  the teacher's embedding size), pretrained here on clean faces of the training
  identities with its own initialisation and data order: a network that is not
  the teacher. Stage 'pretrain_arcface'."""
  s = ConfigDict()
  s.width = 0.25  # = distillation.width: the student's size
  s.small_input_stem = True  # = distillation.small_input_stem
  s.embed_dim = 128  # = teacher.embed_dim (the student's embedding)
  s.arcface_scale = 30.0
  s.arcface_margin = 0.3
  s.batch_size = 64
  s.num_steps = 150  # the teacher's recipe (:full 400)
  s.epochs = 0  # 0 = use num_steps
  s.base_batch_size = 0
  s.optimizer = "adam"
  s.lr = 2e-3
  s.momentum = 0.9  # sgd
  s.nesterov = False  # sgd
  s.b1 = 0.9
  s.b2 = 0.999
  s.weight_decay = 0.0
  s.grad_clip = 0.0  # no clipping
  s.schedule = "cosine"
  s.decay_factor = 0.1  # schedule 'step'
  s.warmup_steps = 50
  s.decay_every_epochs = 0
  s.warmup_epochs = 0
  s.log_every = 50
  s.checkpoint_every = 200
  s.sample_every = 0  # no sample grids
  s.best_metric = ""  # keep the latest checkpoints
  s.best_mode = "min"
  s.dtype = "float32"
  return s


def finetune_arcface() -> ConfigDict:
  """The paper's baseline, part 2 (Table 2's "ArcFace fine-tuned"): a
  pretrained recogniser fine-tuned with ArcFace on completed faces. Stage
  'finetune_arcface' starts from ``init``; stage 'finetune_teacher' (an extra
  row, "teacher fine-tuned") starts from the teacher; both train by this
  section alone. Only the architecture of an ArcFace network trained here
  (width, small_input_stem, embed_dim) is the network's own, read from it
  (``training/baseline_stages.py``): its weights fix it."""
  s = ConfigDict()
  # 'pretrain_arcface': the student-sized ArcFace of stage 'pretrain_arcface';
  # 'converted': a converted recogniser (python -m deocc_jax.convert) at ``path``
  s.init = "pretrain_arcface"
  s.path = ""  # init='converted': the converted recogniser's directory
  s.input_protocol = "auto"  # init='converted': as teacher.input_protocol
  s.input = "completed"  # 'completed' (by G) | 'masked'
  s.generator = "deocclusion"  # input 'completed': the G completing
  # (Table 2: stages finetune_arcface_<noca|gfc|idgan> set it to theirs)
  s.arcface_scale = 30.0  # ArcFace s of the fine-tuning (= teacher's, pretrain_arcface's)
  s.arcface_margin = 0.3  # ArcFace m (radians)
  s.batch_size = 64
  s.num_steps = 50  # half the students' steps (:full 200)
  s.epochs = 0  # 0 = use num_steps
  s.base_batch_size = 0
  s.optimizer = "adam"
  s.lr = 5e-4
  s.momentum = 0.9  # sgd
  s.nesterov = False  # sgd
  s.b1 = 0.9  # adam
  s.b2 = 0.999  # adam
  s.weight_decay = 0.0
  s.grad_clip = 0.0  # no clipping
  s.schedule = "cosine"
  s.decay_factor = 0.1  # schedule 'step'
  s.warmup_steps = 20
  s.decay_every_epochs = 0
  s.warmup_epochs = 0
  s.log_every = 50
  s.checkpoint_every = 200
  s.sample_every = 0  # no sample grids
  s.best_metric = ""  # keep the latest checkpoints
  s.best_mode = "min"
  s.dtype = "float32"  # compute dtype of the network fine-tuned
  return s


def distill_ar() -> ConfigDict:
  """AR's distillation pass (paper Sec. 4.1; Table 1's OUR row), stage
  'distill_ar': a trained student distilled further on AR's real occlusions,
  completed by G with the segmenter's predicted mask; the teacher sees an
  unoccluded AR face of the same subject drawn at random. Reads AR from
  config.evaluate.ar_root (aligned as the evaluation aligns it); AR's rank-1
  probes are then the occluded images it does not train on. The starting
  student's own section gives the architecture and losses; these fields the
  schedule (``training/ar_distillation_stage.py``)."""
  s = ConfigDict()
  s.init = "distill_soft"  # the student it starts from: 'distill_soft' | 'distill_hard'
  s.train_images = (8, 9, 10, 11, 12, 13)  # AR session 1: sunglasses, scarf
  s.teacher_images = (1, 2, 3, 4, 5, 6, 7)  # AR session 1: unoccluded
  s.batch_size = 32
  s.num_steps = 200
  s.epochs = 0  # 0 = use num_steps
  s.base_batch_size = 0
  s.optimizer = "sgd"
  s.lr = 0.01  # a tenth of the students' own
  s.momentum = 0.9
  s.nesterov = False
  s.b1 = 0.9  # adam
  s.b2 = 0.999  # adam
  s.weight_decay = 5e-4
  s.grad_clip = 0.0  # no clipping
  s.schedule = "cosine"
  s.decay_factor = 0.1  # schedule 'step'
  s.warmup_steps = 0
  s.decay_every_epochs = 0
  s.warmup_epochs = 0
  s.log_every = 50
  s.checkpoint_every = 200
  s.sample_every = 0  # no sample grids
  s.best_metric = ""  # keep the latest checkpoints
  s.best_mode = "min"
  return s
