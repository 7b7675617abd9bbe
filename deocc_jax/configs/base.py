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

Run:       python -m deocc_jax.main --config=configs/synthetic.py --workdir=DIR
Override:  --config.data.resolution=64 --config.distillation.num_steps=2000
Variants:  --config=configs/synthetic.py:cpu (see configs/synthetic.py)
"""

from typing import Any

import ml_collections

# Every optimizer / schedule field that training/optim.py reads, with its
# default; each trained section (or optimizer sub-section) holds all of them.
OPTIMIZER_FIELDS: dict[str, Any] = dict(
    optimizer="sgd",  # 'sgd' | 'adam' | 'adamw'
    lr=0.1,
    momentum=0.9,  # sgd
    nesterov=False,  # sgd
    b1=0.9,  # adam / adamw
    b2=0.999,  # adam / adamw
    weight_decay=0.0,  # decoupled (adamw) or added to the gradient (sgd / adam)
    grad_clip=0.0,  # > 0: clip by global norm
    schedule="constant",  # 'constant' | 'step' (x decay_factor every decay_every steps) | 'cosine'
    decay_factor=0.1,  # 'step'
    warmup_steps=0,  # linear warm-up from 0
    decay_every_epochs=0,  # > 0: decay_every in steps, resolved at the stage's start
    warmup_epochs=0,  # > 0: warmup_steps, resolved likewise
)


# The train loop's fields (training/loop.py LoopConfig), in every trained section.
LOOP_FIELDS: dict[str, Any] = dict(
    log_every=50,  # metrics interval (steps)
    checkpoint_every=200,  # checkpoint interval (steps)
    sample_every=0,  # PNG sample grids (0 = never; the de-occlusion stage's)
    best_metric="",  # keep the best checkpoints by this logged metric ('' = latest)
    best_mode="min",  # 'min' | 'max' for best_metric
)


def optimizer_fields(**overrides: Any) -> dict[str, Any]:
  """:data:`OPTIMIZER_FIELDS` with ``overrides`` (a misspelt field raises)."""
  unknown = sorted(set(overrides) - set(OPTIMIZER_FIELDS))
  if unknown:
    raise KeyError(f"not optimizer fields: {unknown}; known: {sorted(OPTIMIZER_FIELDS)}")
  return {**OPTIMIZER_FIELDS, **overrides}


def _add_missing(section: ml_collections.ConfigDict, fields: dict[str, Any]) -> None:
  for key, value in fields.items():
    if key not in section:
      section[key] = value


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
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

  # --- data: the synthetic identity faces (deocc_jax/data/synthetic_faces.py)
  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"  # 'synthetic' | 'celeba' | 'folder'
  c.data.partition = "official"  # celeba: 'official' (list_eval_partition.txt)
  # | 'random_6_1' (the paper's 6:1 image split)
  c.data.root = ""  # data folder for real sources
  c.data.landmarks_file = ""  # folder: optional 5-point file (CelebA row format)
  # a folder of decoded faces (<decoded_root>/<split>/, written by deocc-prepare
  # for this config): the same records, read without JPEG decoding / resizing
  c.data.decoded_root = ""
  c.data.identities = 1000  # synthetic identities (80/10/10 train/val/test)
  c.data.images_per_identity = 20  # images rendered per identity
  c.data.resolution = 32  # face side in pixels (32..256); CPU-sized
  c.data.seed = 0  # data seed: same seed, same faces
  c.data.coverage_range = (0.1, 0.3)  # fraction of the face occluded (mean ~1/5)
  c.data.categories = ("simple", "complex", "body", "hybrid")  # mask categories
  c.data.mask_library = ""  # optional folder of RGBA mask PNGs
  c.data.library_prob = 1.0  # rate at which library masks replace the procedural
  # occluders (when mask_library is set; paper: all)
  c.data.face_mask_prob = 0.2  # share of simple/complex/hybrid draws that are
  # landmark-fitted face masks (~1/2 coverage each)
  # shade / blur / noise occluders like the photo (data/photometric.py); off in
  # this CPU-sized default: it makes occluder synthesis several times slower
  # (benchmarks/results/occluder_paths_step.md).
  c.data.photometric = False
  # where occluders are drawn: 'device' (jax, beside the training step on the
  # accelerators, from a bank rendered once per stage; training/occluder_stream.py)
  # | 'host' (numpy, in the grain stream). Their cost side by side:
  # benchmarks/results/occluder_paths_step.md.
  c.data.occluders = "device"
  # A teacher pool (the VGGFace2 analogue): > 0 trains the ArcFace teacher on
  # this many further synthetic identities, disjoint from every split above
  # (0 = the teacher trains on the 'train' split, like the students).
  c.data.teacher_identities = 0
  c.data.teacher_images_per_identity = 0  # 0 = images_per_identity
  c.data.holdout_identities = 0  # CelebA: identities kept out of every training
  # stage (fraction < 1 or count), split 'heldout';
  # the synthetic splits are identity-disjoint already
  c.data.tuning_identities = 0  # CelebA: a second pool kept out of training,
  # split 'tuning', where lambda_sweep chooses lambda_i and T

  # --- online pair pipeline (grain)
  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.worker_count = 0  # grain worker processes (0 = in-process)
  c.pipeline.read_threads = 0  # grain reader threads (0: the loop's thread; > 0 slow storage)
  c.pipeline.flip = True  # horizontal flip augmentation
  c.pipeline.max_shift_px = 2  # shift augmentation, pixels

  # --- devices / hosts
  c.mesh = ml_collections.ConfigDict()
  c.mesh.num_devices = 0  # 0 = every device of every host
  c.mesh.fsdp = False  # shard params / optimizer state over 'data'
  c.distributed = ml_collections.ConfigDict()
  c.distributed.mode = "none"  # 'none' | 'auto' (SLURM / TPU) | 'manual'
  c.distributed.coordinator_address = ""
  c.distributed.num_processes = -1
  c.distributed.process_id = -1

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep = 2  # checkpoints kept per stage
  c.checkpoint.async_save = True  # Orbax async checkpointing

  c.render = ml_collections.ConfigDict()
  c.render.per_category = 48  # faces per contact sheet
  c.render.columns = 8  # pairs per sheet row
  c.render.stats_examples = 400  # examples measured for coverage statistics

  # --- stage 0: ArcFace teacher on clean faces
  c.teacher = ml_collections.ConfigDict()
  c.teacher.kind = "arcface"  # 'arcface' (trained here) | 'dlib' | 'converted'
  c.teacher.path = ""  # dlib .dat file or converted-teacher dir
  # how a pretrained teacher sees the training faces: 'auto' = its own input
  # protocol (VGGFace2's 224 crop, facenet's 160, insightface's 112 template,
  # dlib's 150 chip), warped from the training crop by the mean training
  # landmarks (teachers/api.py:in_frame); 'resize' = the whole crop resized
  c.teacher.input_protocol = "auto"
  c.teacher.width = 0.25  # ResNet-18 width multiplier
  c.teacher.small_input_stem = True  # 3x3 stride-1 stem for small faces
  c.teacher.embed_dim = 128  # embedding size
  c.teacher.arcface_scale = 30.0  # ArcFace s
  c.teacher.arcface_margin = 0.3  # ArcFace m (radians)
  c.teacher.batch_size = 64
  c.teacher.num_steps = 150  # the default fits 20 min on 2 cores; :full runs 400
  # Schedule from epochs (training/optim.py resolve_schedule): epochs > 0 sets
  # num_steps = epochs x (train examples // batch_size); decay_every_epochs > 0
  # sets decay_every; base_batch_size > 0 scales lr by batch_size / base_batch_size.
  c.teacher.epochs = 0  # 0 = use num_steps
  c.teacher.decay_every_epochs = 0
  c.teacher.base_batch_size = 0  # 0 = lr as given
  c.teacher.optimizer = "adam"  # 'sgd' | 'adam' | 'adamw'
  c.teacher.lr = 2e-3
  c.teacher.weight_decay = 0.0
  c.teacher.schedule = "cosine"
  c.teacher.warmup_steps = 50
  c.teacher.log_every = 50
  c.teacher.checkpoint_every = 200
  c.teacher.dtype = "float32"  # compute dtype ('bfloat16' on GPU / TPU); params fp32
  _add_missing(c.teacher, optimizer_fields())  # momentum, b1, b2, grad_clip, ...
  _add_missing(c.teacher, LOOP_FIELDS)

  c.teacher_embeddings = ml_collections.ConfigDict()
  c.teacher_embeddings.batch_size = 256  # global batch of the extraction job

  # --- stage 1: de-occlusion (DeepFill v1 generator + global/local critics)
  c.deocclusion = ml_collections.ConfigDict()
  c.deocclusion.cnum = 16  # generator base width (paper: 32)
  c.deocclusion.critic_cnum = 16  # critic base width (DeepFill: 64)
  c.deocclusion.contextual_attention = True
  c.deocclusion.local_size = 16  # local critic input side
  # Objective: the paper's Eq. 7-8 here (one critic update per step, for CPU
  # speed); configs/paper_celeba.py uses DeepFill v1's ('deepfill' + 'wgan_gp',
  # lambda_adv 0.001, n_critic 5, Adam 1e-4) — see training/deocclusion_stage.py.
  c.deocclusion.adversarial = "gan"  # 'gan' (Eq. 8) | 'wgan_gp' (DeepFill)
  c.deocclusion.reconstruction = "l1"  # 'l1' (Eq. 7) | 'deepfill'
  c.deocclusion.lambda_adv = 0.01  # weight of the adversarial terms (DeepFill: 0.001)
  c.deocclusion.n_critic = 1  # critic updates per generator update (DeepFill: 5)
  c.deocclusion.gp_lambda = 10.0  # WGAN-GP weight (wgan_gp; masked to the hole)
  c.deocclusion.coarse_alpha = 1.2  # 'deepfill': weight of the coarse output's L1
  c.deocclusion.l1_alpha = 1.2  # 'deepfill': discounted hole L1 weight
  c.deocclusion.ae_alpha = 1.2  # 'deepfill': known-region L1 weight
  c.deocclusion.discount_gamma = 0.9  # 'deepfill': spatial discounting gamma
  c.deocclusion.batch_size = 32
  c.deocclusion.num_steps = 100  # :full 400
  c.deocclusion.epochs = 0  # 0 = use num_steps (see c.teacher.epochs)
  c.deocclusion.base_batch_size = 0  # > 0: scale g/d_optimizer lr linearly
  c.deocclusion.log_every = 50
  c.deocclusion.checkpoint_every = 200
  c.deocclusion.sample_every = 200
  # Keep the best checkpoints by a logged metric instead of the latest ones
  # (e.g. "metric/hole_l1", mode "min"); resuming then starts from the newest kept.
  c.deocclusion.best_metric = ""
  c.deocclusion.best_mode = "min"
  c.deocclusion.dtype = "float32"  # compute dtype of G and the critics
  _add_missing(c.deocclusion, LOOP_FIELDS)
  c.deocclusion.g_optimizer = ml_collections.ConfigDict(
      optimizer_fields(optimizer="adam", lr=1e-3, b1=0.5, b2=0.9, schedule="constant")
  )
  c.deocclusion.d_optimizer = ml_collections.ConfigDict(
      optimizer_fields(optimizer="adam", lr=1e-3, b1=0.5, b2=0.9, schedule="constant")
  )

  # --- Table 2's other completion methods (training/completion_stages.py,
  # docs/completion_baselines.md): stages 'deocclusion_gfc' and
  # 'deocclusion_idgan', trained on the same batches as 'deocclusion' (paired);
  # not in c.stages by default. Each step: one critic update, one generator update.
  c.deocclusion_gfc = ml_collections.ConfigDict()
  c.deocclusion_gfc.base = 8  # GFC generator base width (release: 32)
  c.deocclusion_gfc.fc_dim = 0  # fc width (0 = a quarter of the flattened pool3, as the release)
  c.deocclusion_gfc.noise_fill = True  # fill the hole with uniform noise (GFC), else zeros
  c.deocclusion_gfc.critic_cnum = 16  # critic base width (= deocclusion.critic_cnum)
  c.deocclusion_gfc.local_size = 16  # local critic input side (= deocclusion.local_size)
  c.deocclusion_gfc.parser_width = 8  # face parser width, trained jointly on landmark labels
  c.deocclusion_gfc.lambda_reconstruction = 1.0  # L_r (mean squared error)
  c.deocclusion_gfc.lambda_adv_local = 300.0 / (3 * 128 * 128)  # L_a1 (release's, per element)
  c.deocclusion_gfc.lambda_adv_global = 300.0 / (3 * 128 * 128)  # L_a2 (release's, per element)
  c.deocclusion_gfc.lambda_parsing = 0.05 / 3  # L_p (release's, per element)
  c.deocclusion_gfc.batch_size = 32  # = deocclusion.batch_size: the same batches
  c.deocclusion_gfc.num_steps = 100  # = deocclusion.num_steps
  c.deocclusion_gfc.epochs = 0  # 0 = use num_steps
  c.deocclusion_gfc.base_batch_size = 0  # > 0: scale the optimizers' lr linearly
  c.deocclusion_gfc.log_every = 50
  c.deocclusion_gfc.checkpoint_every = 200
  c.deocclusion_gfc.sample_every = 0  # no sample grids
  c.deocclusion_gfc.best_metric = ""  # e.g. "metric/hole_l1" (mode "min")
  c.deocclusion_gfc.best_mode = "min"
  c.deocclusion_gfc.g_optimizer = ml_collections.ConfigDict(
      optimizer_fields(optimizer="adam", lr=1e-3, b1=0.5, b2=0.9, schedule="constant")
  )  # as deocclusion.g_optimizer
  c.deocclusion_gfc.d_optimizer = ml_collections.ConfigDict(
      optimizer_fields(optimizer="adam", lr=1e-3, b1=0.5, b2=0.9, schedule="constant")
  )  # as deocclusion.d_optimizer
  c.deocclusion_gfc.parser_optimizer = ml_collections.ConfigDict(
      optimizer_fields(optimizer="adam", lr=1e-3, schedule="constant")
  )  # the parser's pixel cross-entropy
  c.deocclusion_idgan = ml_collections.ConfigDict()
  c.deocclusion_idgan.base = 16  # GLCIC-style generator base width (GLCIC: 64)
  c.deocclusion_idgan.critic_cnum = 16  # critic base width (= deocclusion.critic_cnum)
  c.deocclusion_idgan.local_size = 16  # local critic input side (= deocclusion.local_size)
  c.deocclusion_idgan.lambda_reconstruction = 1.0  # mean L1 (Eq. 7)
  c.deocclusion_idgan.lambda_adv_local = 1e-3  # local adversarial term
  c.deocclusion_idgan.lambda_adv_global = 1e-3  # global adversarial term
  c.deocclusion_idgan.lambda_identity = 0.1  # identity preservation (the teacher, clean target)
  c.deocclusion_idgan.lambda_diversity = 0.1  # identity diversity between identities
  c.deocclusion_idgan.diversity_margin = 0.2  # cosine margin of the diversity term
  c.deocclusion_idgan.batch_size = 32  # = deocclusion.batch_size: the same batches
  c.deocclusion_idgan.num_steps = 100  # = deocclusion.num_steps
  c.deocclusion_idgan.epochs = 0  # 0 = use num_steps
  c.deocclusion_idgan.base_batch_size = 0  # > 0: scale the optimizers' lr linearly
  c.deocclusion_idgan.log_every = 50
  c.deocclusion_idgan.checkpoint_every = 200
  c.deocclusion_idgan.sample_every = 0  # no sample grids
  c.deocclusion_idgan.best_metric = ""  # e.g. "metric/hole_l1" (mode "min")
  c.deocclusion_idgan.best_mode = "min"
  c.deocclusion_idgan.g_optimizer = ml_collections.ConfigDict(
      optimizer_fields(optimizer="adam", lr=1e-3, b1=0.5, b2=0.9, schedule="constant")
  )  # as deocclusion.g_optimizer
  c.deocclusion_idgan.d_optimizer = ml_collections.ConfigDict(
      optimizer_fields(optimizer="adam", lr=1e-3, b1=0.5, b2=0.9, schedule="constant")
  )  # as deocclusion.d_optimizer

  # --- stage 2: distillation (ResNet-18 student, Eq. 16)
  c.distillation = ml_collections.ConfigDict()
  c.distillation.instance = "hard"  # set per stage: distill_hard / distill_soft
  # the de-occlusion stage whose G completes the students' faces (Table 2:
  # stages distill_<hard|soft>_<noca|gfc|idgan> set it to theirs)
  c.distillation.generator = "deocclusion"
  c.distillation.width = 0.25  # student ResNet-18 width multiplier
  c.distillation.small_input_stem = True
  c.distillation.use_ce = True  # L_CE term (classifier over train identities)
  # L_CE: 'teacher' = the paper's (text after Eq. 16): a student head over the
  # teacher's classes trained on softmax(teacher logits / T), Hinton KD with the
  # T^2 factor (the ArcFace teacher's class outputs are its scaled cosines
  # arcface_scale * cos; dlib has none); 'labels' = CE with the identity labels.
  c.distillation.ce_target = "labels"  # 'labels' | 'teacher'
  c.distillation.temperature = 4.0  # T for ce_target='teacher' (paper: unstated)
  # Instance term (Eq. 12 / 17): the L1 distance ||t - s||_1, summed over the D
  # embedding dimensions. Its per-sample gradient has norm lambda_i sqrt(D), so
  # lambda_i ~ 1/sqrt(D) would give it unit size (the paper config's 0.02).
  # 0.001 was chosen on the synthetic *validation* identities, never the test
  # ones (docs/experiments/2026-12-01-lambda-i-validation.md). The paper
  # leaves lambda_i unstated.
  c.distillation.lambda_i = 0.001
  c.distillation.lambda_p = 1.0  # pair-wise distance term (paper: 1)
  c.distillation.lambda_t = 2.0  # triplet-wise angle term (paper: 2)
  c.distillation.sharded_relational = False  # shard_map tuple blocks per device
  c.distillation.angle_block_size = 0  # anchors per block (0 = direct)
  c.distillation.batch_size = 64
  c.distillation.num_steps = 100  # :full 400
  c.distillation.epochs = 0  # 0 = use num_steps (see c.teacher.epochs)
  c.distillation.decay_every_epochs = 0  # schedule 'step': decay every this many epochs
  c.distillation.base_batch_size = 0  # > 0: lr was chosen for this global batch
  c.distillation.optimizer = "sgd"
  c.distillation.lr = 0.1
  c.distillation.momentum = 0.9
  c.distillation.weight_decay = 5e-4
  c.distillation.schedule = "cosine"
  c.distillation.warmup_steps = 50
  c.distillation.log_every = 50
  c.distillation.checkpoint_every = 200
  c.distillation.dtype = "float32"  # the student's compute dtype
  _add_missing(c.distillation, optimizer_fields())  # nesterov, grad_clip, ...
  _add_missing(c.distillation, LOOP_FIELDS)

  # --- optional end-to-end stage (Eq. 6); add "joint" to c.stages to run it
  c.joint = ml_collections.ConfigDict()
  c.joint.instance = "hard"  # instance loss of the joint objective
  c.joint.init_from_stages = True  # start from deocclusion + distill_<instance>
  c.joint.lambda_gan = 1.0  # weight of the generator's own losses
  c.joint.lambda_distill = 0.1  # weight of Eq. 16 flowing into G and the student
  c.joint.batch_size = 32
  c.joint.num_steps = 200
  c.joint.log_every = 50
  c.joint.checkpoint_every = 200
  _add_missing(c.joint, LOOP_FIELDS)

  # --- blind de-occlusion: occlusion-mask predictor (used when no mask is given)
  c.segmentation = ml_collections.ConfigDict()
  c.segmentation.width = 16  # segmenter base width
  c.segmentation.dice_weight = 1.0  # BCE + dice_weight x soft Dice
  c.segmentation.pos_weight = 1.0  # BCE weight of occluded pixels
  c.segmentation.threshold = 0.5  # probability above which a pixel is occluded
  c.segmentation.batch_size = 32
  c.segmentation.num_steps = 150  # :full 300
  c.segmentation.epochs = 0  # 0 = use num_steps
  c.segmentation.base_batch_size = 0  # > 0: scale optimizer.lr linearly
  c.segmentation.dtype = "float32"
  _add_missing(c.segmentation, LOOP_FIELDS)
  c.segmentation.log_every = 50
  c.segmentation.checkpoint_every = 300
  c.segmentation.optimizer = ml_collections.ConfigDict(
      optimizer_fields(optimizer="adam", lr=2e-3, schedule="cosine", warmup_steps=20)
  )

  # --- the paper's baseline, part 1 (Sec. 4.2, "Distillation vs Fine-tune"):
  # an ArcFace recogniser of the student's size (ResNet-18 at the student's
  # width, the teacher's embedding size), pretrained here on clean faces of the
  # training identities with its own initialisation and data order: a network
  # that is not the teacher. Stage 'pretrain_arcface'.
  c.pretrain_arcface = ml_collections.ConfigDict()
  c.pretrain_arcface.width = 0.25  # = distillation.width: the student's size
  c.pretrain_arcface.small_input_stem = True  # = distillation.small_input_stem
  c.pretrain_arcface.embed_dim = 128  # = teacher.embed_dim (the student's embedding)
  c.pretrain_arcface.arcface_scale = 30.0
  c.pretrain_arcface.arcface_margin = 0.3
  c.pretrain_arcface.batch_size = 64
  c.pretrain_arcface.num_steps = 150  # the teacher's recipe (:full 400)
  c.pretrain_arcface.epochs = 0  # 0 = use num_steps
  c.pretrain_arcface.decay_every_epochs = 0
  c.pretrain_arcface.base_batch_size = 0
  c.pretrain_arcface.optimizer = "adam"
  c.pretrain_arcface.lr = 2e-3
  c.pretrain_arcface.weight_decay = 0.0
  c.pretrain_arcface.schedule = "cosine"
  c.pretrain_arcface.warmup_steps = 50
  c.pretrain_arcface.log_every = 50
  c.pretrain_arcface.checkpoint_every = 200
  c.pretrain_arcface.dtype = "float32"
  _add_missing(c.pretrain_arcface, optimizer_fields())
  _add_missing(c.pretrain_arcface, LOOP_FIELDS)

  # --- the paper's baseline, part 2 (Table 2's "ArcFace fine-tuned"): a
  # pretrained recogniser fine-tuned with ArcFace on completed faces. Stage
  # 'finetune_arcface' starts from ``init``; stage 'finetune_teacher' (an extra
  # row, "teacher fine-tuned") starts from the teacher; both with this recipe.
  # The network's own fields (width, embedding, ArcFace s and m) come from the
  # network fine-tuned; the fields here set the fine-tuning.
  c.finetune_arcface = ml_collections.ConfigDict()
  # 'pretrain_arcface': the student-sized ArcFace of stage 'pretrain_arcface';
  # 'converted': a converted recogniser (python -m deocc_jax.convert) at ``path``
  c.finetune_arcface.init = "pretrain_arcface"
  c.finetune_arcface.path = ""  # init='converted': the converted recogniser's directory
  c.finetune_arcface.input_protocol = "auto"  # init='converted': as teacher.input_protocol
  c.finetune_arcface.input = "completed"  # 'completed' (by G) | 'masked'
  c.finetune_arcface.generator = "deocclusion"  # input 'completed': the G completing
  # (Table 2: stages finetune_arcface_<noca|gfc|idgan> set it to theirs)
  c.finetune_arcface.batch_size = 64
  c.finetune_arcface.num_steps = 50  # half the students' steps (:full 200)
  c.finetune_arcface.epochs = 0  # 0 = use num_steps
  c.finetune_arcface.decay_every_epochs = 0
  c.finetune_arcface.base_batch_size = 0
  c.finetune_arcface.optimizer = "adam"
  c.finetune_arcface.lr = 5e-4
  c.finetune_arcface.schedule = "cosine"
  c.finetune_arcface.warmup_steps = 20
  c.finetune_arcface.log_every = 50
  c.finetune_arcface.checkpoint_every = 200

  # --- AR's distillation pass (paper Sec. 4.1; Table 1's OUR row), stage
  # 'distill_ar': a trained student distilled further on AR's real occlusions,
  # completed by G with the segmenter's predicted mask; the teacher sees an
  # unoccluded AR face of the same subject drawn at random. Reads AR from
  # config.evaluate.ar_root (aligned as the evaluation aligns it); AR's rank-1
  # probes are then the occluded images it does not train on.
  c.distill_ar = ml_collections.ConfigDict()
  c.distill_ar.init = "distill_soft"  # the student it starts from: 'distill_soft' | 'distill_hard'
  c.distill_ar.train_images = (8, 9, 10, 11, 12, 13)  # AR session 1: sunglasses, scarf
  c.distill_ar.teacher_images = (1, 2, 3, 4, 5, 6, 7)  # AR session 1: unoccluded
  c.distill_ar.batch_size = 32
  c.distill_ar.num_steps = 200
  c.distill_ar.epochs = 0  # 0 = use num_steps
  c.distill_ar.decay_every_epochs = 0
  c.distill_ar.base_batch_size = 0
  c.distill_ar.optimizer = "sgd"
  c.distill_ar.lr = 0.01  # a tenth of the students' own
  c.distill_ar.momentum = 0.9
  c.distill_ar.weight_decay = 5e-4
  c.distill_ar.schedule = "cosine"
  c.distill_ar.warmup_steps = 0
  c.distill_ar.log_every = 50
  c.distill_ar.checkpoint_every = 200
  _add_missing(c.distill_ar, optimizer_fields())
  _add_missing(c.distill_ar, LOOP_FIELDS)

  # --- evaluation (deocc_jax/evaluation/job.py; also python -m deocc_jax.evaluate)
  c.evaluate = ml_collections.ConfigDict()
  c.evaluate.checkpoint = "latest"  # 'latest' | 'best' | step | 'latest,distill_soft=best'
  c.evaluate.held_out = True  # the protocols on config.data's held-out identities
  c.evaluate.split = "test"  # ... of this split
  c.evaluate.num_pairs = 3000  # 10 folds x (150 + 150); :full 6,000 (LFW-sized)
  c.evaluate.seed = 1234  # fixed occluders / pairs of the evaluation sets
  c.evaluate.batch_size = 256  # global batch of the sharded extraction
  c.evaluate.max_records = 0  # 0 = every face of the split
  c.evaluate.recognizers = ()  # () = every trained one; else names from
  # teacher, arcface_pretrained, arcface_finetuned, teacher_finetuned,
  # student_hard, student_soft, student_ar, pretrained_<architecture>
  # Pretrained recognisers as published, one row each (Table 1's VGGFace /
  # SphereFace rows): 'dlib' or directories of python -m deocc_jax.convert.
  c.evaluate.pretrained_recognizers = ()
  # Table 1's classical rows (deocc_jax/runs/classical_rows.py): linear
  # maps fitted on clean faces of the training split, keys classical_<name>.
  c.evaluate.classical = ml_collections.ConfigDict()
  c.evaluate.classical.recognizers = ()  # any of 'pca', 'lpp', 'gpca', 'sr'
  c.evaluate.classical.fit_faces = 1000  # the first faces of the training split
  c.evaluate.classical.dims = 100  # embedding size of each
  c.evaluate.classical.lpp_pca_dims = 150  # LPP's PCA step (>= dims)
  c.evaluate.classical.neighbours = 5  # LPP's k-nearest-neighbour graph
  c.evaluate.classical.gabor_stride = 4  # GW+PCA: Gabor magnitudes every 4 px
  # 'sr' (sparse-representation classification, Wright et al. 2009) is an
  # identification-only row: its dictionary is each identification protocol's
  # gallery, probes ranked by class residual; no embedding, so no verification row.
  c.evaluate.classical.sr_lambda = 1e-3  # l1 weight of the Lasso form (FISTA)
  c.evaluate.classical.sr_iters = 500  # FISTA iterations (fixed, batched over probes)
  c.evaluate.classical.sr_feature_size = (12, 10)  # (h, w) area-downsampled luminance
  c.evaluate.classical.sr_occlusion = False  # True: the [A, I] occlusion dictionary
  # Table 1's RPCA / GL completions, input keys 'rpca_fill' / 'gl_fill' of
  # evaluate.inputs (deocc_jax/runs/library_fill.py): each completes a face
  # from a library of the first clean faces of the training split. Per probe,
  # RPCA decomposes a (1 + library_faces) x pixels matrix, one thin SVD per sweep
  # (~5 GFLOP per sweep at 65 x 256^2 x 3): the library's size sets the cost.
  c.evaluate.classical_fill = ml_collections.ConfigDict()
  c.evaluate.classical_fill.library_faces = 64  # the first faces of the training split
  c.evaluate.classical_fill.rpca_max_iters = 100  # inexact-ALM sweeps at most ...
  c.evaluate.classical_fill.rpca_tol = 1e-5  # ... until |D - A - E|_F / |D|_F < tol
  c.evaluate.classical_fill.rpca_lambda = 0.0  # sparse weight; 0 = 1 / sqrt(pixels)
  c.evaluate.classical_fill.gl_neighbours = 10  # library faces combined into the exemplar
  c.evaluate.classical_fill.gl_ridge = 1e-3  # ridge of that least-squares combination
  c.evaluate.classical_fill.gl_edge_sigma = 0.25  # edge weights exp(-|dg|^2 / s^2); 0 = unit
  c.evaluate.classical_fill.gl_num_iters = 400  # conjugate-gradient sweeps of the solve
  c.evaluate.inputs = (
      "clean",
      "masked",
      "mean_fill",
      "diffusion_fill",
      "completed_predicted",
      "completed",
      "completed_noca",
      "completed_gfc",
      "completed_idgan",
  )  # G without CA / GFC / IDGAN: when their stage ran; opt-in: 'rpca_fill', 'gl_fill'
  # The recognisers retrained on another completion (stages distill_<hard|soft>_<g>,
  # finetune_arcface_<g>): 'all' = embedded on every input, as the other rows;
  # 'own' = on the clean faces and their own completion only (their Table 2 cell,
  # evaluation/completion_methods.py; the other cells of their rows stay empty).
  c.evaluate.retrained_inputs = "all"
  c.evaluate.categories = ("simple", "complex", "body", "hybrid")  # per-category tables
  # How those tables are made: 'mixture' = the mixture's pairs grouped by the
  # category of their second face's occluder (no further images / embeddings);
  # 'views' = every face occluded once more per category (5x the embeddings).
  c.evaluate.by_category = "mixture"
  c.evaluate.diffusion_iters = 200  # Jacobi sweeps of the diffusion fill
  c.evaluate.identification = True  # AR-style rank-1 / CMC (sunglasses, scarf)
  c.evaluate.gallery_per_identity = 1  # clean gallery faces per identity
  c.evaluate.probes_per_identity = 6  # probes per identity and subset (AR: 6); 0 = all
  c.evaluate.plots = True  # ROC / CMC / accuracy / loss plots, completion grid
  c.evaluate.lfw_root = ""  # real LFW folder (adds the LFW tables) ...
  c.evaluate.lfw_pairs = ""  # ... and its pairs.txt
  c.evaluate.lfw_landmarks = ""  # optional landmarks file (CelebA row format)
  c.evaluate.ar_root = ""  # real AR folder (adds AR1 / AR2 identification)
  c.evaluate.ar_landmarks = ""
  c.evaluate.align_real_faces = True  # LFW / AR aligned by 5 landmarks onto the mean
  # training landmarks (paper Sec. 4.1); False: crop
  c.evaluate.landmark_detector = ""  # where a set has no landmarks file: 'dlib',
  # 'mtcnn' (facenet-pytorch's weights), 'mtcnn:FILE.npz' (converted with
  # python -m deocc_jax.convert --arch mtcnn), 'package.module:fn' (image -> (5, 2)), '' = none
  # (the set's default layout; counted in the titles)

  # --- the Fig. 5 loss ablation (stage 'ablation'; configs/synthetic.py:ablation)
  c.ablation = ml_collections.ConfigDict()
  c.ablation.settings = (
      "ce",
      "ce_pair",
      "ce_pair_angle",
      "ce_pair_angle_hard",
      "ce_pair_angle_soft",
  )
  c.ablation.num_steps = 400  # distillation steps per setting ...
  c.ablation.epochs = 0  # ... or > 0: epochs x (train faces // distillation batch)
  c.ablation.eval_every = 100  # checkpoint + held-out evaluation interval
  c.ablation.num_pairs = 6000  # verification pairs of the held-out evaluation
  c.ablation.max_eval_records = 0  # 0 = every held-out face

  # --- lambda_i and T chosen on identities set apart for it (stage 'lambda_sweep',
  # studies/lambda_sweep.py): one student per (lambda_i, T), scored on
  # config.evaluate.split, which must not be the tables' ('heldout' / 'test')
  c.lambda_sweep = ml_collections.ConfigDict()
  c.lambda_sweep.lambda_i = (0.0003, 0.001, 0.003)
  c.lambda_sweep.temperature = (1.0,)  # label CE here: T has no effect
  c.lambda_sweep.instance = "soft"  # the instance term's form: 'hard' | 'soft'
  c.lambda_sweep.num_steps = 400  # distillation steps per setting
  c.lambda_sweep.eval_every = 400  # the rule reads the last step
  c.lambda_sweep.num_pairs = 6000
  c.lambda_sweep.max_eval_records = 0  # 0 = every face of the split

  # --- the teacher-strength study (stage 'teacher_study';
  # configs/synthetic.py:teacher_study): per setting an ArcFace teacher on a pool
  # of that many synthetic identities disjoint from every split (0 = the
  # students' training split), then the fine-tuned baseline and the students
  # from it. Setting i is the i-th entry of each tuple. Fixed before the run
  # (never chosen on the test identities): the default teacher, then 2x and 4x
  # the identities on disjoint pools, trained 4x / 8x as long.
  c.teacher_study = ml_collections.ConfigDict()
  c.teacher_study.identities = (0, 1600, 3200)  # teacher pool size (0 = training split)
  c.teacher_study.images = (20, 20, 20)  # images per pool identity
  c.teacher_study.width = (0.25, 0.25, 0.25)  # the teacher's ResNet-18 width
  c.teacher_study.steps = (400, 1600, 3200)  # the teacher's training steps
  # the students distilled from each setting's teacher: 'distill_hard' (Eq. 12)
  # and / or 'distill_soft' (Eq. 17, with that teacher's identity centres)
  c.teacher_study.students = ("distill_soft",)
  c.teacher_study.num_pairs = 6000  # held-out verification pairs (10 folds)
  c.teacher_study.max_eval_records = 0  # 0 = every held-out face
  return c
