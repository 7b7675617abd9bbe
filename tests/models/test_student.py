"""ResNet18Student: shapes, BatchNorm state, bf16, and numerics vs a hand-written torch ResNet-18."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as F

from deocc_jax.models.student import ResNet18Student


class _TBlock(tnn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = tnn.BatchNorm2d(cout)
    self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = tnn.BatchNorm2d(cout)
    self.down = None
    if stride != 1 or cin != cout:
      self.down = tnn.Sequential(
          tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)
      )

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.down is None else self.down(x)))


class _TResNet18(tnn.Module):

  def __init__(self, widths, small, emb, ncls):
    super().__init__()
    self.small = small
    self.stem = (
        tnn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        if small
        else tnn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
    )
    self.bn = tnn.BatchNorm2d(widths[0])
    blocks, cin = [], widths[0]
    for i, w in enumerate(widths):
      for j in range(2):
        blocks.append(_TBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
        cin = w
    self.blocks = tnn.ModuleList(blocks)
    self.emb = tnn.Linear(widths[-1], emb)
    self.cls = tnn.Linear(emb, ncls)

  def forward(self, x):
    x = F.relu(self.bn(self.stem(x)))
    if not self.small:
      x = F.max_pool2d(x, 3, 2, 1)
    for b in self.blocks:
      x = b(x)
    f = x.mean((2, 3))
    e = self.emb(f)
    return f, e, self.cls(e)


def _copy_weights(variables, tm: _TResNet18) -> None:
  p, st = variables["params"], variables["batch_stats"]

  def conv(t, k):
    t.weight.data = torch.tensor(np.asarray(k["kernel"]).transpose(3, 2, 0, 1))

  def bn(t, name, pp, ss):
    t.weight.data = torch.tensor(np.asarray(pp[name]["scale"]))
    t.bias.data = torch.tensor(np.asarray(pp[name]["bias"]))
    t.running_mean.data = torch.tensor(np.asarray(ss[name]["mean"]))
    t.running_var.data = torch.tensor(np.asarray(ss[name]["var"]))

  conv(tm.stem, p["stem_conv"])
  bn(tm.bn, "stem_bn", p, st)
  for idx, blk in enumerate(tm.blocks):
    name = f"layer{idx // 2 + 1}_{idx % 2}"
    pp, ss = p[name], st[name]
    conv(blk.conv1, pp["conv1"])
    conv(blk.conv2, pp["conv2"])
    bn(blk.bn1, "bn1", pp, ss)
    bn(blk.bn2, "bn2", pp, ss)
    if blk.down is not None:
      conv(blk.down[0], pp["down_conv"])
      bn(blk.down[1], "down_bn", pp, ss)
  for t, name in ((tm.emb, "embedding"), (tm.cls, "classifier")):
    t.weight.data = torch.tensor(np.asarray(p[name]["kernel"]).T)
    t.bias.data = torch.tensor(np.asarray(p[name]["bias"]))


def _randomise(variables, seed):
  """Non-trivial BN parameters and running statistics."""
  rng = np.random.default_rng(seed)

  def f(path, x):
    key = jax.tree_util.keystr(path)
    if key.endswith("['scale']") or key.endswith("['var']"):
      return jnp.asarray(rng.uniform(0.5, 1.5, x.shape), x.dtype)
    if key.endswith("['bias']") or key.endswith("['mean']"):
      return jnp.asarray(rng.normal(0, 0.1, x.shape), x.dtype)
    return x

  return jax.tree_util.tree_map_with_path(f, variables)


@pytest.mark.parametrize("small,size", [(True, 32), (False, 64)])
def test_matches_torch_resnet18(small, size):
  model = ResNet18Student(embedding_dim=24, num_classes=7, width=0.25, small_input_stem=small)
  x = np.random.default_rng(0).uniform(-1, 1, (4, size, size, 3)).astype(np.float32)
  variables = _randomise(model.init(jax.random.PRNGKey(0), jnp.asarray(x)), 1)
  tm = _TResNet18(model.stage_widths(), small, 24, 7)
  _copy_weights(variables, tm)
  xt = torch.tensor(x.transpose(0, 3, 1, 2))

  # Eval mode: running statistics.
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(x))
  tm.eval()
  with torch.no_grad():
    f, e, lg = tm(xt)
  for k, ref in (("features", f), ("embedding", e), ("logits", lg)):
    np.testing.assert_allclose(np.asarray(out[k]), ref.numpy(), rtol=2e-4, atol=2e-4)

  # Train mode: batch statistics, and the running-mean update (momentum 0.1).
  out, upd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, jnp.asarray(x)
  )
  tm.train()
  with torch.no_grad():
    f, e, lg = tm(xt)
  for k, ref in (("features", f), ("embedding", e), ("logits", lg)):
    np.testing.assert_allclose(np.asarray(out[k]), ref.numpy(), rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(
      np.asarray(upd["batch_stats"]["layer3_0"]["bn2"]["mean"]),
      tm.blocks[4].bn2.running_mean.numpy(),
      rtol=1e-4,
      atol=1e-5,
  )


def test_shapes_no_head_and_bf16():
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  m32 = ResNet18Student(embedding_dim=16, num_classes=None, width=0.125, small_input_stem=True)
  v = m32.init(jax.random.PRNGKey(0), x)
  out = m32.apply(v, x)
  assert set(out) == {"features", "embedding"}
  assert out["features"].shape == (2, 64) and out["embedding"].shape == (2, 16)
  # Eval mode does not touch batch_stats; train mode changes them.
  _, upd = m32.apply(v, x, train=True, mutable=["batch_stats"])
  before = v["batch_stats"]["stem_bn"]["mean"]
  assert not np.allclose(np.asarray(upd["batch_stats"]["stem_bn"]["mean"]), np.asarray(before))
  mbf = ResNet18Student(embedding_dim=16, width=0.125, small_input_stem=True, dtype=jnp.bfloat16)
  obf = mbf.apply(v, x)
  assert obf["embedding"].dtype == jnp.float32
  assert jax.tree.leaves(v["params"])[0].dtype == jnp.float32
  # bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.4%): measured here max
  # |diff| 0.011 on embeddings up to 3.1 (0.4%); bound 1% of the largest value
  ref = np.asarray(out["embedding"])
  err = np.abs(np.asarray(obf["embedding"]) - ref).max()
  assert err <= 0.01 * np.abs(ref).max(), (err, np.abs(ref).max())


def test_bad_input_raises():
  m = ResNet18Student(width=0.125, small_input_stem=True)
  with pytest.raises(ValueError, match=r"images.*\(2, 32, 32, 1\)"):
    m.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 1)))
  with pytest.raises(ValueError, match=r"images.*\(32, 32, 3\)"):
    m.init(jax.random.PRNGKey(0), jnp.zeros((32, 32, 3)))
