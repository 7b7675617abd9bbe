"""Config sections of the evaluation and the studies, every field written out.

Each builder returns one section of :func:`deocc_jax.configs.base.get_config`.
"""

from __future__ import annotations

from ml_collections import ConfigDict


def evaluate() -> ConfigDict:
  """The evaluation (deocc_jax/evaluation/job.py; also python -m deocc_jax.evaluate)."""
  s = ConfigDict()
  # The checkpoint each trained stage's model is restored from (the stage's
  # artefact; runs/models.py checkpoint_choice): 'latest', 'best' (a stage that
  # keeps its checkpoints by a best_metric) or a step as digits ('400'). Every
  # stage takes ``default`` unless its own field says otherwise ('' = default),
  # e.g. --config.evaluate.checkpoints.distill_soft=best
  s.checkpoints = ConfigDict()
  s.checkpoints.default = "latest"
  s.checkpoints.teacher = ""
  s.checkpoints.deocclusion = ""
  s.checkpoints.deocclusion_noca = ""
  s.checkpoints.deocclusion_gfc = ""
  s.checkpoints.deocclusion_idgan = ""
  s.checkpoints.segmentation = ""
  s.checkpoints.pretrain_arcface = ""
  s.checkpoints.finetune_arcface = ""
  s.checkpoints.finetune_teacher = ""
  s.checkpoints.distill_hard = ""
  s.checkpoints.distill_soft = ""
  s.checkpoints.distill_ar = ""
  s.checkpoints.distill_hard_noca = ""
  s.checkpoints.distill_soft_noca = ""
  s.checkpoints.finetune_arcface_noca = ""
  s.checkpoints.distill_hard_gfc = ""
  s.checkpoints.distill_soft_gfc = ""
  s.checkpoints.finetune_arcface_gfc = ""
  s.checkpoints.distill_hard_idgan = ""
  s.checkpoints.distill_soft_idgan = ""
  s.checkpoints.finetune_arcface_idgan = ""
  s.held_out = True  # the protocols on config.data's held-out identities
  s.split = "test"  # ... of this split
  s.num_pairs = 3000  # 10 folds x (150 + 150); :full 6,000 (LFW-sized)
  s.seed = 1234  # fixed occluders / pairs of the evaluation sets
  s.batch_size = 256  # global batch of the sharded extraction
  s.max_records = 0  # 0 = every face of the split
  s.recognizers = ()  # () = every trained one; else names from
  # teacher, arcface_pretrained, arcface_finetuned, teacher_finetuned,
  # student_hard, student_soft, student_ar, pretrained_<architecture>
  # Pretrained recognisers as published, one row each (Table 1's VGGFace /
  # SphereFace rows): 'dlib' or directories of python -m deocc_jax.convert.
  s.pretrained_recognizers = ()
  # Table 1's classical rows (deocc_jax/runs/classical_rows.py): linear
  # maps fitted on clean faces of the training split, keys classical_<name>.
  s.classical = ConfigDict()
  s.classical.recognizers = ()  # any of 'pca', 'lpp', 'gpca', 'sr'
  s.classical.fit_faces = 1000  # the first faces of the training split
  s.classical.dims = 100  # embedding size of each
  s.classical.lpp_pca_dims = 150  # LPP's PCA step (>= dims)
  s.classical.neighbours = 5  # LPP's k-nearest-neighbour graph
  s.classical.gabor_stride = 4  # GW+PCA: Gabor magnitudes every 4 px
  # 'sr' (sparse-representation classification, Wright et al. 2009) is an
  # identification-only row: its dictionary is each identification protocol's
  # gallery, probes ranked by class residual; no embedding, so no verification row.
  s.classical.sr_lambda = 1e-3  # l1 weight of the Lasso form (FISTA)
  s.classical.sr_iters = 500  # FISTA iterations (fixed, batched over probes)
  s.classical.sr_feature_size = (12, 10)  # (h, w) area-downsampled luminance
  s.classical.sr_occlusion = False  # True: the [A, I] occlusion dictionary
  # Table 1's RPCA / GL completions, input keys 'rpca_fill' / 'gl_fill' of
  # evaluate.inputs (deocc_jax/runs/library_fill.py): each completes a face
  # from a library of the first clean faces of the training split. Per probe,
  # RPCA decomposes a (1 + library_faces) x pixels matrix, one thin SVD per sweep
  # (~5 GFLOP per sweep at 65 x 256^2 x 3): the library's size sets the cost.
  s.classical_fill = ConfigDict()
  s.classical_fill.library_faces = 64  # the first faces of the training split
  s.classical_fill.rpca_max_iters = 100  # inexact-ALM sweeps at most ...
  s.classical_fill.rpca_tol = 1e-5  # ... until |D - A - E|_F / |D|_F < tol
  s.classical_fill.rpca_lambda = 0.0  # sparse weight; 0 = 1 / sqrt(pixels)
  s.classical_fill.gl_neighbours = 10  # library faces combined into the exemplar
  s.classical_fill.gl_ridge = 1e-3  # ridge of that least-squares combination
  s.classical_fill.gl_edge_sigma = 0.25  # edge weights exp(-|dg|^2 / s^2); 0 = unit
  s.classical_fill.gl_num_iters = 400  # conjugate-gradient sweeps of the solve
  s.inputs = (
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
  # evaluation/evaluators/completion_methods.py; the other cells of their rows stay empty).
  s.retrained_inputs = "all"
  s.categories = ("simple", "complex", "body", "hybrid")  # per-category tables
  # How those tables are made: 'mixture' = the mixture's pairs grouped by the
  # category of their second face's occluder (no further images / embeddings);
  # 'views' = every face occluded once more per category (5x the embeddings).
  s.by_category = "mixture"
  s.diffusion_iters = 200  # Jacobi sweeps of the diffusion fill
  s.identification = True  # AR-style rank-1 / CMC (sunglasses, scarf)
  s.gallery_per_identity = 1  # clean gallery faces per identity
  s.probes_per_identity = 6  # probes per identity and subset (AR: 6); 0 = all
  s.plots = True  # ROC / CMC / accuracy / loss plots, completion grid
  s.lfw_root = ""  # real LFW folder (adds the LFW tables) ...
  s.lfw_pairs = ""  # ... and its pairs.txt
  s.lfw_landmarks = ""  # optional landmarks file (CelebA row format)
  s.ar_root = ""  # real AR folder (adds AR1 / AR2 identification)
  s.ar_landmarks = ""
  s.align_real_faces = True  # LFW / AR aligned by 5 landmarks onto the mean
  # training landmarks (paper Sec. 4.1); False: crop
  s.landmark_detector = ""  # where a set has no landmarks file: 'dlib',
  # 'mtcnn' (facenet-pytorch's weights), 'mtcnn:FILE.npz' (converted with
  # python -m deocc_jax.convert --arch mtcnn), 'package.module:fn' (image -> (5, 2)), '' = none
  # (the set's default layout; counted in the titles)
  return s


def ablation() -> ConfigDict:
  """The Fig. 5 loss ablation (stage 'ablation'; configs/synthetic.py:ablation)."""
  s = ConfigDict()
  s.settings = (
      "ce",
      "ce_pair",
      "ce_pair_angle",
      "ce_pair_angle_hard",
      "ce_pair_angle_soft",
  )
  s.num_steps = 400  # distillation steps per setting ...
  s.epochs = 0  # ... or > 0: epochs x (train faces // distillation batch)
  s.eval_every = 100  # checkpoint + held-out evaluation interval
  s.num_pairs = 6000  # verification pairs of the held-out evaluation
  s.max_eval_records = 0  # 0 = every held-out face
  return s


def lambda_sweep() -> ConfigDict:
  """lambda_i and T chosen on identities set apart for it (stage 'lambda_sweep',
  studies/lambda_sweep.py): one student per (lambda_i, T), scored on
  config.evaluate.split, which must not be the tables' ('heldout' / 'test')."""
  s = ConfigDict()
  s.lambda_i = (0.0003, 0.001, 0.003)
  s.temperature = (1.0,)  # label CE here: T has no effect
  s.instance = "soft"  # the instance term's form: 'hard' | 'soft'
  s.num_steps = 400  # distillation steps per setting
  s.eval_every = 400  # the rule reads the last step
  s.num_pairs = 6000
  s.max_eval_records = 0  # 0 = every face of the split
  return s


def teacher_study() -> ConfigDict:
  """The teacher-strength study (stage 'teacher_study';
  configs/synthetic.py:teacher_study): per setting an ArcFace teacher on a pool
  of that many synthetic identities disjoint from every split (0 = the
  students' training split), then the fine-tuned baseline and the students
  from it. Setting i is the i-th entry of each tuple. Fixed before the run
  (never chosen on the test identities): the default teacher, then 2x and 4x
  the identities on disjoint pools, trained 4x / 8x as long."""
  s = ConfigDict()
  s.identities = (0, 1600, 3200)  # teacher pool size (0 = training split)
  s.images = (20, 20, 20)  # images per pool identity
  s.width = (0.25, 0.25, 0.25)  # the teacher's ResNet-18 width
  s.steps = (400, 1600, 3200)  # the teacher's training steps
  # the students distilled from each setting's teacher: 'distill_hard' (Eq. 12)
  # and / or 'distill_soft' (Eq. 17, with that teacher's identity centres)
  s.students = ("distill_soft",)
  s.num_pairs = 6000  # held-out verification pairs (10 folds)
  s.max_eval_records = 0  # 0 = every held-out face
  return s
