"""The paper's setting (Li et al., ACM MM 2020, section 3.4 / 4.1).

CelebA at 256 px, DeepFill-v1 completion, a VGGFace2 teacher converted from
PyTorch, a ResNet-18 student; every value and why: ``deocc_jax/configs/paper.py``.
Rehearse the whole path on a miniature first: configs/paper_rehearsal.py.

    python -m deocc_jax.convert --arch vggface2_resnet50 \
        --weights resnet50_ft_weight.pkl --out ckpt/vggface2_r50
    python -m deocc_jax.main --config=configs/paper_celeba.py --workdir=runs/paper \
        --config.data.root=/data/celeba --config.teacher.path=ckpt/vggface2_r50

Hardware variants (after a colon). Schedules stay in epochs: at each stage's
start the steps, the decay points and the lr (linear scaling from batch 128)
follow from the training split's size and the global batch.
  :gpu8     one host with 8 GPUs (the paper's setting, data parallel):
            --config=configs/paper_celeba.py:gpu8
  :tpu_pod  a TPU-VM pod slice (multi-host, jax.distributed auto-detect);
            launch on every worker with launch/tpu_pod.sh
  :lambda_sweep  lambda_i and T chosen on the 500 tuning identities (stage
            lambda_sweep, same workdir: the teacher and G are reused); combine
            with a hardware variant: --config=configs/paper_celeba.py:gpu8,lambda_sweep
"""

from __future__ import annotations

import ml_collections

from deocc_jax import configs
from deocc_jax.configs import paper


def _gpu8(c: ml_collections.ConfigDict) -> None:
  c.mesh.num_devices = 0  # all 8 GPUs on the 'data' axis
  c.pipeline.worker_count = 32  # feed 8 devices
  c.distillation.batch_size = 128  # global: 16 per GPU
  c.deocclusion.dtype = "bfloat16"  # bf16 compute, fp32 params
  c.distillation.dtype = "bfloat16"
  c.distillation.sharded_relational = True


def _tpu_pod(c: ml_collections.ConfigDict) -> None:
  c.distributed.mode = "auto"  # jax.distributed.initialize() on each host
  c.mesh.fsdp = True  # shard params / optimizer state over 'data'
  c.pipeline.worker_count = 16  # per host
  c.deocclusion.dtype = "bfloat16"
  c.distillation.dtype = "bfloat16"
  # Global batches: decay every 24 epochs, lr 0.1 x 256 / 128 = 0.2.
  c.deocclusion.batch_size = 256
  c.deocclusion_gfc.batch_size = c.deocclusion_idgan.batch_size = 256  # G's batches (paired)
  c.distillation.batch_size = 256
  c.distillation.sharded_relational = True
  c.checkpoint.async_save = True


def _lambda_sweep(c: ml_collections.ConfigDict) -> None:
  """lambda_i and T chosen on the 500 tuning identities (the run's teacher and G;
  the choice goes to the main run as --config.distillation.lambda_i / temperature)."""
  c.stages = ("teacher", "teacher_embeddings", "deocclusion", "lambda_sweep")
  c.evaluate.split = "tuning"
  c.lambda_sweep.lambda_i = (0.005, 0.02, 0.08)  # around 1/sqrt(2048)
  c.lambda_sweep.temperature = (1.0, 2.0, 4.0)  # 1: the paper's text read literally
  c.lambda_sweep.num_steps = 24 * (paper.CELEBA_TRAIN_IMAGES_APPROX // 128)  # 24 epochs
  c.lambda_sweep.eval_every = c.lambda_sweep.num_steps


VARIANTS = {"gpu8": _gpu8, "tpu_pod": _tpu_pod, "lambda_sweep": _lambda_sweep}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return configs.apply_variants(paper.get_config(), arg, VARIANTS, "configs/paper_celeba.py")
