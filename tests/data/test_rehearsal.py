"""The rehearsal's miniature paths are set before a run starts (data/rehearsal.py):
no stage changes the config."""

import os

import pytest

from deocc_jax.configs.experiments import paper_rehearsal
from deocc_jax.data import rehearsal
from deocc_jax.errors import ConfigError


def test_with_paths_points_a_copy_at_the_miniature(tmp_path):
  c = paper_rehearsal.get_config()
  before = c.to_dict()
  got = rehearsal.with_paths(c, str(tmp_path))
  assert c.to_dict() == before  # the given config is left as it was
  root = os.path.join(str(tmp_path), "rehearsal_data")
  assert got.data.root == os.path.join(root, "celeba")
  assert got.evaluate.ar_root == os.path.join(root, "AR")
  assert got.teacher.path == os.path.join(root, "teacher")
  assert got.finetune_arcface.path == os.path.join(root, "arcface")  # the student-sized ArcFace
  changed = {
      f"{s}.{k}"
      for s, sec in got.to_dict().items()
      if isinstance(sec, dict)
      for k, v in sec.items()
      if before[s][k] != v
  }
  assert changed == set(rehearsal.paths(root))
  c.rehearsal.root = str(tmp_path / "elsewhere")
  assert rehearsal.with_paths(c, "ignored").data.root == str(tmp_path / "elsewhere" / "celeba")


def test_the_stage_refuses_a_config_not_pointed_at_its_miniature(tmp_path):
  c = paper_rehearsal.get_config()
  with pytest.raises(ConfigError, match=r"point elsewhere: .*with_paths"):
    rehearsal.run(c, str(tmp_path))
  assert not (tmp_path / "rehearsal_data").exists()  # refused before writing anything


def test_the_networks_it_writes_are_the_published_layouts():
  """Each state dict the rehearsal converts loads strictly (every name and
  shape) into the PyTorch reference of its published layout, and its random
  network's embeddings differ between inputs (pooled / fc ReLU features of a
  random network are all positive: cosines near 1 on noise, but not 1)."""
  import numpy as np
  import torch  # in the test extra

  from tests.helpers.torch_reference import TorchSphere20a, TorchVGGFace, TorchVGGFace2ResNet

  r = paper_rehearsal.get_config().rehearsal
  cases = (
      (TorchVGGFace2ResNet(), rehearsal.vggface2_resnet50_state_dict(0), 224, 224),
      (
          TorchVGGFace(r.vggface_widths, r.vggface_fc_features, 2622),
          rehearsal.vggface_vgg16_state_dict(r.vggface_widths, r.vggface_fc_features, seed=1),
          224,
          224,
      ),
      (
          TorchSphere20a(r.sphereface_widths, r.sphereface_features, 10574),
          rehearsal.sphereface20_state_dict(r.sphereface_widths, r.sphereface_features, seed=2),
          112,
          96,
      ),
  )
  x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (3, 3, 224, 224)).astype("f4"))
  for model, sd, h, w in cases:
    model.load_state_dict(sd, strict=True)
    with torch.no_grad():
      emb = model.eval()(x[:, :, :h, :w])[0].flatten(1)
    emb = emb / emb.norm(dim=1, keepdim=True)
    cos = (emb @ emb.T).numpy()
    assert np.isfinite(cos).all() and cos[np.triu_indices(3, 1)].max() < 0.9999, (model, cos)
