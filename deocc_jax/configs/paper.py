"""The paper's setting (Li et al., ACM MM 2020, section 3.4 / 4.1), on the base config.

Run through ``configs/paper_celeba.py`` (hardware variants ``:gpu8``,
``:tpu_pod``) or rehearse it with ``configs/paper_rehearsal.py``.

CelebA at 256 px, DeepFill-v1 completion (cnum 32), a VGGFace2 teacher
converted from PyTorch, a ResNet-18 student, batch 128, SGD lr 0.1 times 0.1
every 24 epochs, lambda_p = 1, lambda_t = 2, random 6:1 train/val split of
the images of all but 1,000 CelebA identities; those 1,000 identities (never
trained on) and LFW / AR (when their paths are given; aligned by 5 landmarks
like CelebA) make the tables. Schedules are in epochs and resolved at each
stage's start from the training split's size and the global batch (lr scaled
linearly from batch 128), so hardware variants only change the batch.

Stages: teacher embeddings (Eq. 18 centroids), de-occlusion (G), occlusion
segmenter, hard / soft students, the fine-tuned teacher baseline of Table 2,
the evaluation (Fig. 4 / Table 1 / Table 2 shapes) and the Fig. 5 ablation.
Rehearse the whole path on a miniature first: configs/paper_rehearsal.py.

    python -m deocc_jax.convert --arch vggface2_resnet50 \
        --weights resnet50_ft_weight.pkl --out ckpt/vggface2_r50
    python -m deocc_jax.main --config=configs/paper_celeba.py --workdir=runs/paper \
        --config.data.root=/data/celeba --config.teacher.path=ckpt/vggface2_r50
"""

import ml_collections

from deocc_jax.configs import base  # every field is documented there

# For the Fig. 5 ablation's length only (its steps are set directly): ~6/7 of
# the images of CelebA's 10,177 identities less the 1,000 held out.
CELEBA_TRAIN_IMAGES_APPROX = 202_599 * 8_677 // 10_177 * 6 // 7


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.stages = (
      "teacher_embeddings",
      "deocclusion",
      "segmentation",
      "distill_hard",
      "distill_soft",
      "distill_ar",  # Table 1's OUR row: the soft student distilled on AR (Sec. 4.1)
      "finetune_arcface",
      "finetune_teacher",
      "evaluate",
      "ablation",
  )
  # Table 2's "GA w/o attention" column: the same G without contextual
  # attention (stage 'deocclusion_noca', its own workdir folder); its completions
  # are an extra input ("G without CA, true mask") of the evaluation tables.
  c.stages = tuple(
      s for st in c.stages for s in ((st, "deocclusion_noca") if st == "deocclusion" else (st,))
  )
  # Table 2's other columns, GFC [26] and IDGAN [9] (training/completion_stages.py),
  # and each base recogniser retrained on every other completion, after its base stage.
  gens = ("noca", "gfc", "idgan")
  after = {
      "deocclusion_noca": ("deocclusion_gfc", "deocclusion_idgan"),
      **{b: tuple(f"{b}_{g}" for g in gens) for b in ("distill_hard", "distill_soft")},
      "finetune_arcface": tuple(f"finetune_arcface_{g}" for g in gens),
  }
  c.stages = tuple(s for st in c.stages for s in (st, *after.get(st, ())))
  c.data.source = "celeba"
  c.data.root = ""  # REQUIRED: folder with img_align_celeba/ + annotations
  c.data.partition = "random_6_1"  # the paper's random 6:1 train/validation split
  c.data.holdout_identities = 1000  # ... of the images of the other identities; these
  # 1,000 (split 'heldout') are never trained on
  c.data.tuning_identities = 500  # nor these (split 'tuning'): lambda_i and T are
  # chosen on them (configs/paper_celeba.py:lambda_sweep), never on the tables'
  c.data.resolution = 256
  c.data.photometric = True  # occluders harmonised with the photo
  c.data.occluders = "device"  # drawn on the accelerators: the host would starve them
  c.pipeline.worker_count = 16
  c.pipeline.max_shift_px = 8

  c.teacher.kind = "converted"  # VGGFace2 teacher (python -m deocc_jax.convert)
  c.teacher.path = ""  # REQUIRED: the converted teacher directory
  c.teacher_embeddings.batch_size = 512

  c.deocclusion.cnum = 32
  c.deocclusion.critic_cnum = 64
  c.deocclusion.local_size = 128
  # G's objective: DeepFill v1's, as in the official inpaint_model.py (the paper
  # adopts "GA with contextual attention" [57]); Eq. 7-8 (reconstruction 'l1',
  # adversarial 'gan') remain an option. See training/deocclusion_stage.py.
  c.deocclusion.adversarial = "wgan_gp"  # WGAN-GP, global + local critics,
  c.deocclusion.gp_lambda = 10.0  # penalty masked to the hole for both
  c.deocclusion.reconstruction = "deepfill"  # discounted hole L1 + known-region L1,
  c.deocclusion.coarse_alpha = 1.2  # coarse output supervised too
  c.deocclusion.l1_alpha = 1.2  # l1_loss_alpha
  c.deocclusion.ae_alpha = 1.2  # ae_loss_alpha
  c.deocclusion.discount_gamma = 0.9  # spatial discounting
  c.deocclusion.lambda_adv = 0.001  # gan_loss_alpha
  c.deocclusion.n_critic = 5  # critic updates per generator update
  c.deocclusion.batch_size = 128
  c.deocclusion.epochs = 30  # not stated in the paper
  c.deocclusion.base_batch_size = 0  # Adam rates as given whatever the batch
  c.deocclusion.checkpoint_every = 2000
  c.deocclusion.sample_every = 2000
  c.deocclusion.g_optimizer.lr = 1e-4  # Adam (0.5, 0.9) as DeepFill v1
  c.deocclusion.d_optimizer.lr = 1e-4

  c.distillation.width = 1.0  # the real ResNet-18
  c.distillation.small_input_stem = False
  c.distillation.batch_size = 128
  c.distillation.epochs = 72  # 3 decays; the paper does not state the total
  c.distillation.optimizer = "sgd"
  c.distillation.lr = 0.1  # for the global batch base_batch_size ...
  c.distillation.base_batch_size = 128  # ... scaled linearly for other batches
  c.distillation.schedule = "step"
  c.distillation.decay_every_epochs = 24  # x0.1 every 24 epochs
  c.distillation.decay_factor = 0.1
  c.distillation.warmup_steps = 0
  c.distillation.lambda_p = 1.0
  c.distillation.lambda_t = 2.0
  # L_CE as the paper defines it (text after Eq. 16): cross-entropy between the
  # teacher's and the student's class outputs; the student's head covers the
  # teacher's 8,631 VGGFace2 classes, trained on softmax(teacher logits / T)
  # (Hinton KD, T^2-scaled; T is not stated in the paper). 'labels' = CE with
  # the CelebA identity labels instead.
  c.distillation.ce_target = "teacher"
  c.distillation.temperature = 4.0
  # Eq. 12 / 17 sum |t - s| over the 2,048 embedding dimensions; the per-sample
  # gradient of lambda_i ||t - s||_1 has norm lambda_i sqrt(D), so lambda_i =
  # 1/sqrt(2048) ~ 0.02 gives it unit size, the order of the CE gradient (the
  # paper does not state lambda_i).
  c.distillation.lambda_i = 0.02
  c.distillation.angle_block_size = 32
  c.distillation.checkpoint_every = 2000
  # GFC at the release's widths (base 32, fc a quarter of pool3) and IDGAN at
  # GLCIC's (64); critics, local patch, batch and length as G's (the same
  # batches: paired). Not taken from the GFC / IDGAN papers: the critics (ours),
  # the parser's width, Adam 1e-4 (0.5, 0.9) and 30 epochs (G's).
  for name, width in (("deocclusion_gfc", 32), ("deocclusion_idgan", 64)):
    s = c[name]
    s.base = width
    s.critic_cnum = 64
    s.local_size = 128
    s.batch_size = 128
    s.epochs = 30
    s.checkpoint_every = 2000
    s.g_optimizer.lr = 1e-4
    s.d_optimizer.lr = 1e-4
  c.deocclusion_gfc.parser_width = 32
  c.segmentation.width = 32
  c.segmentation.batch_size = 64
  c.segmentation.epochs = 8  # not in the paper (blind de-occlusion)
  c.segmentation.checkpoint_every = 2000

  # Table 2's baseline: "the ArcFace model, which has a similar size with our
  # student model", fine-tuned with an ArcFace head on G-completed faces: a
  # converted recogniser the user names (e.g. an insightface IResNet,
  # python -m deocc_jax.convert); 'finetune_teacher' fine-tunes the VGGFace2
  # teacher the same way (an extra row). The paper states no schedule.
  c.finetune_arcface.init = "converted"
  c.finetune_arcface.path = ""  # REQUIRED: the converted recogniser's directory
  c.finetune_arcface.input = "completed"
  c.finetune_arcface.batch_size = 128
  c.finetune_arcface.epochs = 8
  c.finetune_arcface.optimizer = "sgd"
  c.finetune_arcface.lr = 0.01
  c.finetune_arcface.base_batch_size = 128
  c.finetune_arcface.schedule = "cosine"
  c.finetune_arcface.warmup_steps = 500
  c.finetune_arcface.checkpoint_every = 2000

  c.evaluate.split = "heldout"  # the 1,000 held-out identities (never trained on)
  c.evaluate.batch_size = 512
  c.evaluate.diffusion_iters = 2000  # holes ~50 px across at 256 px
  c.evaluate.lfw_root = ""  # the paper's LFW table: /data/lfw ...
  c.evaluate.lfw_pairs = ""  # ... and /data/pairs.txt
  c.evaluate.ar_root = ""  # the paper's Table 1: the AR folder
  c.evaluate.lfw_landmarks = ""  # optional 5-point files (CelebA row format);
  c.evaluate.ar_landmarks = ""  # without one, faces are detected:
  # LFW / AR without landmark files: MTCNN (facenet-pytorch's weights, or
  # 'mtcnn:FILE.npz' converted), which finds masked faces dlib's HOG misses (on
  # face-masked real photos 0.94 vs 0.19: benchmarks/results/masked_real_photos.md);
  # 'dlib' gives CelebA's five points from its 68-point predictor.
  c.evaluate.landmark_detector = "mtcnn"
  # Table 1's completion columns: RPCA [53] and GL [8] from a library of the
  # first training faces (evaluate.classical_fill: 64 faces, <= 100 RPCA sweeps).
  c.evaluate.inputs = tuple(c.evaluate.inputs) + ("rpca_fill", "gl_fill")
  # Table 1's rows: the classical PCA, GW+PCA, LPP (fitted on 1,000 training faces)
  # and SR (identification only); the networks as published (VGGFace, SphereFace,
  # a pretrained ArcFace) are your converted directories in
  # evaluate.pretrained_recognizers (python -m deocc_jax.convert; docs/teachers.md);
  # VGGFace2 is the teacher.
  c.evaluate.classical.recognizers = ("pca", "gpca", "lpp", "sr")

  # Fig. 5: one student per loss setting, evaluated on the held-out identities.
  c.ablation.epochs = 24  # steps = 24 x (train images // distillation batch)
  c.ablation.num_steps = 24 * (CELEBA_TRAIN_IMAGES_APPROX // 128)  # used when epochs = 0
  c.ablation.eval_every = 2000
  c.ablation.num_pairs = 6000
  return c
