"""Config sections of the completion networks and the occlusion segmenter,
every field written out.

Each builder returns one section of :func:`deocc_jax.configs.base.get_config`;
optimizer sub-sections come from :func:`deocc_jax.configs.fields.optimizer`,
whose call names each field (their meanings: ``deocc_jax/configs/fields.py``).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from deocc_jax.configs import fields


def _gan_adam() -> ConfigDict:
  """DeepFill v1's Adam (0.5, 0.9), constant lr: each generator's and critic's."""
  return fields.optimizer(
      optimizer="adam",
      lr=1e-3,
      momentum=0.9,
      nesterov=False,
      b1=0.5,
      b2=0.9,
      weight_decay=0.0,
      grad_clip=0.0,
      schedule="constant",
      decay_factor=0.1,
      warmup_steps=0,
      decay_every_epochs=0,
      warmup_epochs=0,
  )


def deocclusion() -> ConfigDict:
  """Stage 1: de-occlusion (DeepFill v1 generator + global/local critics)."""
  s = ConfigDict()
  s.cnum = 16  # generator base width (paper: 32)
  s.critic_cnum = 16  # critic base width (DeepFill: 64)
  s.contextual_attention = True
  s.local_size = 16  # local critic input side
  # Objective: the paper's Eq. 7-8 here (one critic update per step, for CPU
  # speed); configs/paper_celeba.py uses DeepFill v1's ('deepfill' + 'wgan_gp',
  # lambda_adv 0.001, n_critic 5, Adam 1e-4) -- see training/deocclusion_stage.py.
  s.adversarial = "gan"  # 'gan' (Eq. 8) | 'wgan_gp' (DeepFill)
  s.reconstruction = "l1"  # 'l1' (Eq. 7) | 'deepfill'
  s.lambda_adv = 0.01  # weight of the adversarial terms (DeepFill: 0.001)
  s.n_critic = 1  # critic updates per generator update (DeepFill: 5)
  s.gp_lambda = 10.0  # WGAN-GP weight (wgan_gp; masked to the hole)
  s.coarse_alpha = 1.2  # 'deepfill': weight of the coarse output's L1
  s.l1_alpha = 1.2  # 'deepfill': discounted hole L1 weight
  s.ae_alpha = 1.2  # 'deepfill': known-region L1 weight
  s.discount_gamma = 0.9  # 'deepfill': spatial discounting gamma
  s.batch_size = 32
  s.num_steps = 100  # :full 400
  s.epochs = 0  # 0 = use num_steps (see recognizer_sections.py)
  s.base_batch_size = 0  # > 0: scale g/d_optimizer lr linearly
  s.log_every = 50
  s.checkpoint_every = 200
  s.sample_every = 200  # PNG sample grids of the completions
  # Keep the best checkpoints by a logged metric instead of the latest ones
  # (e.g. "metric/hole_l1", mode "min"); resuming then starts from the newest kept.
  s.best_metric = ""
  s.best_mode = "min"
  s.dtype = "float32"  # compute dtype of G and the critics
  s.g_optimizer = _gan_adam()  # the generator's
  s.d_optimizer = _gan_adam()  # the critics'
  return s


def deocclusion_gfc() -> ConfigDict:
  """Table 2's GFC (training/completion_stages.py, docs/completion_baselines.md):
  stage 'deocclusion_gfc', trained on the same batches as 'deocclusion'
  (paired); not in config.stages by default. Each step: one critic update, one
  generator update."""
  s = ConfigDict()
  s.base = 8  # GFC generator base width (release: 32)
  s.fc_dim = 0  # fc width (0 = a quarter of the flattened pool3, as the release)
  s.noise_fill = True  # fill the hole with uniform noise (GFC), else zeros
  s.critic_cnum = 16  # critic base width (= deocclusion.critic_cnum)
  s.local_size = 16  # local critic input side (= deocclusion.local_size)
  s.parser_width = 8  # face parser width, trained jointly on landmark labels
  s.lambda_reconstruction = 1.0  # L_r (mean squared error)
  s.lambda_adv_local = 300.0 / (3 * 128 * 128)  # L_a1 (release's, per element)
  s.lambda_adv_global = 300.0 / (3 * 128 * 128)  # L_a2 (release's, per element)
  s.lambda_parsing = 0.05 / 3  # L_p (release's, per element)
  s.batch_size = 32  # = deocclusion.batch_size: the same batches
  s.num_steps = 100  # = deocclusion.num_steps
  s.epochs = 0  # 0 = use num_steps
  s.base_batch_size = 0  # > 0: scale the optimizers' lr linearly
  s.log_every = 50
  s.checkpoint_every = 200
  s.sample_every = 0  # no sample grids
  s.best_metric = ""  # e.g. "metric/hole_l1" (mode "min")
  s.best_mode = "min"
  s.g_optimizer = _gan_adam()  # as deocclusion.g_optimizer
  s.d_optimizer = _gan_adam()  # as deocclusion.d_optimizer
  s.parser_optimizer = fields.optimizer(  # the parser's pixel cross-entropy
      optimizer="adam",
      lr=1e-3,
      momentum=0.9,
      nesterov=False,
      b1=0.9,
      b2=0.999,
      weight_decay=0.0,
      grad_clip=0.0,
      schedule="constant",
      decay_factor=0.1,
      warmup_steps=0,
      decay_every_epochs=0,
      warmup_epochs=0,
  )
  return s


def deocclusion_idgan() -> ConfigDict:
  """Table 2's IDGAN-style completion: stage 'deocclusion_idgan', paired with
  'deocclusion' like 'deocclusion_gfc'."""
  s = ConfigDict()
  s.base = 16  # GLCIC-style generator base width (GLCIC: 64)
  s.critic_cnum = 16  # critic base width (= deocclusion.critic_cnum)
  s.local_size = 16  # local critic input side (= deocclusion.local_size)
  s.lambda_reconstruction = 1.0  # mean L1 (Eq. 7)
  s.lambda_adv_local = 1e-3  # local adversarial term
  s.lambda_adv_global = 1e-3  # global adversarial term
  s.lambda_identity = 0.1  # identity preservation (the teacher, clean target)
  s.lambda_diversity = 0.1  # identity diversity between identities
  s.diversity_margin = 0.2  # cosine margin of the diversity term
  s.batch_size = 32  # = deocclusion.batch_size: the same batches
  s.num_steps = 100  # = deocclusion.num_steps
  s.epochs = 0  # 0 = use num_steps
  s.base_batch_size = 0  # > 0: scale the optimizers' lr linearly
  s.log_every = 50
  s.checkpoint_every = 200
  s.sample_every = 0  # no sample grids
  s.best_metric = ""  # e.g. "metric/hole_l1" (mode "min")
  s.best_mode = "min"
  s.g_optimizer = _gan_adam()  # as deocclusion.g_optimizer
  s.d_optimizer = _gan_adam()  # as deocclusion.d_optimizer
  return s


def segmentation() -> ConfigDict:
  """Blind de-occlusion: the occlusion-mask predictor (used when no mask is given)."""
  s = ConfigDict()
  s.width = 16  # segmenter base width
  s.dice_weight = 1.0  # BCE + dice_weight x soft Dice
  s.pos_weight = 1.0  # BCE weight of occluded pixels
  s.threshold = 0.5  # probability above which a pixel is occluded
  s.batch_size = 32
  s.num_steps = 150  # :full 300
  s.epochs = 0  # 0 = use num_steps
  s.base_batch_size = 0  # > 0: scale optimizer.lr linearly
  s.dtype = "float32"
  s.log_every = 50
  s.checkpoint_every = 300
  s.sample_every = 0  # no sample grids
  s.best_metric = ""  # keep the latest checkpoints
  s.best_mode = "min"
  s.optimizer = fields.optimizer(
      optimizer="adam",
      lr=2e-3,
      momentum=0.9,
      nesterov=False,
      b1=0.9,
      b2=0.999,
      weight_decay=0.0,
      grad_clip=0.0,
      schedule="cosine",
      decay_factor=0.1,
      warmup_steps=20,
      decay_every_epochs=0,
      warmup_epochs=0,
  )
  return s
