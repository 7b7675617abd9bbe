"""Occlusion segmenter: shapes, IoU metric, and a short training run."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from deocc_jax.configs import fields
from deocc_jax.data import masks as masks_lib
from deocc_jax.data.pipeline import PipelineConfig, synthetic_loader
from deocc_jax.models.occlusion_segmenter import OcclusionSegmenter
from deocc_jax.runs import builders
from deocc_jax.training import loop
from deocc_jax.training import segmentation_stage as seg
from deocc_jax.utils import sharding


# rbg keys: with the default threefry keys, compiling the 14 random kernel
# initialisers alone takes ~25 s on these CPUs (the forward pass < 1 s).
def _key(seed=0):
  return jax.random.key(seed, impl="rbg")


def test_shapes():
  model = OcclusionSegmenter(width=4)
  params = jax.jit(model.init)(_key(), jnp.zeros((1, 32, 32, 3)))["params"]
  apply32 = jax.jit(model.apply)
  apply16 = jax.jit(OcclusionSegmenter(width=4, dtype=jnp.bfloat16).apply)
  for hw in [(32, 32), (24, 40)]:  # fully convolutional: same params
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, *hw, 3)), jnp.float32)
    y = apply32({"params": params}, x)
    assert y.shape == (2, *hw, 1) and y.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(y)))
    y16 = apply16({"params": params}, x)
    assert y16.shape == (2, *hw, 1) and y16.dtype == jnp.float32
    # measured at 32 px: max |diff| 0.14 on logits up to 3.2 (4.3%: GroupNorm's
    # statistics in bf16); bound 10% of the largest logit
    err = float(np.abs(np.asarray(y16) - np.asarray(y)).max())
    assert err <= 0.1 * float(np.abs(np.asarray(y)).max()), err
  with pytest.raises(ValueError, match="divisible by 4"):
    model.apply({"params": params}, jnp.zeros((1, 30, 32, 3)))


def test_matches_an_independent_torch_forward_pass():
  """The U-Net against a PyTorch module written from its description
  (tests/helpers/torch_reference.py: SAME padding, GroupNorm of min(8, C)
  groups with flax's epsilon 1e-6, nearest x2 upsampling, skips), in float64,
  every parameter (biases, GroupNorm scales and offsets) drawn at random."""
  import torch  # the test extra installs it: missing, this fails

  from tests.helpers.torch_reference import TorchOcclusionSegmenter, load_flax_, nhwc_to_nchw

  rng = np.random.default_rng(3)
  x = rng.uniform(-1, 1, (2, 24, 40, 3)).astype(np.float32)  # H != W, both divisible by 4
  model = OcclusionSegmenter(width=4)
  params = jax.jit(model.init)(_key(), jnp.asarray(x))["params"]
  params = jax.tree.map(lambda p: p + 0.2 * rng.normal(size=p.shape).astype(np.float32), params)
  got = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(x)), np.float64)
  names = {"down1": "down1", "down2": "down2", "head": "head"}
  for block in ("enc1", "enc2", "bottleneck", "dec2", "dec1"):
    for j in range(2):
      names[f"{block}.conv{j}"] = f"{block}/conv{j}"
      names[f"{block}.norm{j}"] = f"{block}/norm{j}"
  ref = load_flax_(TorchOcclusionSegmenter(width=4), params, names)
  with torch.no_grad():
    want = ref(nhwc_to_nchw(x).double()).numpy().transpose(0, 2, 3, 1)
  assert got.shape == want.shape == (2, 24, 40, 1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_iou_per_category_vs_numpy():
  rng = np.random.default_rng(0)
  pred = (rng.random((12, 8, 8, 1)) < 0.3).astype(np.float32)
  true = (rng.random((12, 8, 8, 1)) < 0.3).astype(np.float32)
  cat = np.array([0, 1, 1, 3, 0, 3, 3, 1, 0, 0, 1, 3])  # no 'body'
  out = seg.iou_per_category(pred, true, cat)
  assert set(out) == {"simple", "complex", "hybrid", "mixed"}
  for c, name in enumerate(masks_lib.CATEGORIES):
    if name not in out:
      continue
    i = u = 0
    for b in range(12):
      if cat[b] == c:
        for v in range(64):
          pv, tv = pred[b].ravel()[v] > 0.5, true[b].ravel()[v] > 0.5
          i += pv and tv
          u += pv or tv
    assert out[name] == pytest.approx(i / u)
  p, t = pred > 0.5, true > 0.5
  assert out["mixed"] == pytest.approx((p & t).sum() / (p | t).sum())
  # a perfect prediction and an all-empty category
  perfect = seg.iou_per_category(true, true, cat)
  assert all(v == 1.0 for v in perfect.values())


def _eval_batch(n=64, res=32, seed=123):
  loader, _ = synthetic_loader(
      "validation",
      identities=40,
      images_per_identity=4,
      resolution=res,
      config=PipelineConfig(batch_size=n, seed=seed, worker_count=0),
  )
  return next(iter(loader))


def test_short_training_beats_trivial_baseline(tmp_path):
  res, steps = 32, 80
  cfg = ConfigDict(
      dict(
          width=8,
          dtype="float32",
          num_steps=steps,
          dice_weight=0.5,
          pos_weight=1.0,
          optimizer=ConfigDict(
              fields.optimizer_fields(optimizer="adam", lr=5e-3, schedule="constant")
          ),
      )
  )
  init_fn, step_fn = seg.make_fns(cfg, res)
  loader, _ = synthetic_loader(
      "train",
      identities=50,
      images_per_identity=8,
      resolution=res,
      config=PipelineConfig(batch_size=16, seed=0, worker_count=0),
  )
  logs = []
  t0 = time.perf_counter()
  state = loop.run(
      "segmentation",
      str(tmp_path),
      init_fn,
      step_fn,
      iter(loader),
      _key(0),
      sharding.make_mesh(1),
      loop.LoopConfig(
          num_steps=steps,
          log_every=40,
          checkpoint_every=steps,
          batch_keys=("masked", "mask"),
          progress=False,
          async_checkpoints=False,
      ),
      log=logs.append,
  )
  train_s = time.perf_counter() - t0
  assert int(state["step"]) == steps

  batch = _eval_batch()
  pred = np.asarray(builders.predict_mask_fn(cfg, state["params"])(batch["masked"]))
  assert pred.shape == batch["mask"].shape and set(np.unique(pred)) <= {0.0, 1.0}
  ious = seg.iou_per_category(pred, batch["mask"], batch["category"])
  trivial = seg.iou_per_category(np.ones_like(batch["mask"]), batch["mask"], batch["category"])[
      "mixed"
  ]
  print(
      f"\nsegmenter {steps} steps in {train_s:.1f}s; trivial IoU {trivial:.3f}; "
      + ", ".join(f"{k} {v:.3f}" for k, v in ious.items())
  )
  assert trivial < 0.25
  assert ious["mixed"] > max(0.4, 2.5 * trivial), (ious, trivial)

  # the checkpoint restores to the same parameters
  step, restored = loop.restore_state(
      str(tmp_path), "segmentation", init_fn, _key(1), sharding.make_mesh(1)
  )
  assert step == steps
  chex_eq = jax.tree_util.tree_map(
      lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), restored["params"], state["params"]
  )
  assert all(jax.tree_util.tree_leaves(chex_eq))
