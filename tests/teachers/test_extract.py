"""Offline teacher jobs: sharded extraction == plain loop; centroids (Eq. 18)."""

import jax.numpy as jnp
import numpy as np
import pytest

from deocc_jax.teachers import extract
from deocc_jax.utils import sharding


class _Src:

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    rng = np.random.default_rng(i)
    return {"image": rng.integers(0, 255, (8, 8, 3)).astype(np.uint8), "identity": np.int32(i % 7)}


def _embed(x):
  x = x.astype(jnp.float32).reshape(x.shape[0], -1)
  w = jnp.cos(jnp.arange(x.shape[1] * 5, dtype=jnp.float32).reshape(-1, 5))
  return x @ w


@pytest.mark.parametrize("devices,n", [(8, 45), (1, 45), (4, 16)])
def test_sharded_extraction_matches_a_plain_loop(devices, n):
  src = _Src(n)
  emb, lab = extract.extract_embeddings(
      _embed, src, batch_size=16, mesh=sharding.make_mesh(devices)
  )
  ref = np.stack([np.asarray(_embed(jnp.asarray(src[i]["image"])[None]))[0] for i in range(n)])
  np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-3)
  np.testing.assert_array_equal(lab, np.arange(n) % 7)


def test_centroids_eq18_and_outputs_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  e = rng.normal(size=(30, 4)).astype(np.float32)
  y = rng.integers(0, 5, 30)
  y[y == 3] = 4  # identity 3 has no sample
  cent, counts = extract.identity_centroids_np(e, y, num_classes=6)
  for c in range(6):
    ref = e[y == c].mean(0) if (y == c).any() else np.zeros(4)
    np.testing.assert_allclose(cent[c], ref, rtol=1e-6, atol=1e-7)
    assert counts[c] == (y == c).sum()
  meta = extract.write_teacher_outputs(str(tmp_path / "t"), e, y, {"teacher": "x"}, 6)
  out = extract.load_teacher_outputs(str(tmp_path / "t"))
  np.testing.assert_array_equal(out["embeddings"], e)
  assert out["metadata"]["num_classes"] == 6 and meta["teacher"] == "x"
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    extract.identity_centroids_np(e, y, num_classes=2)
  with pytest.raises(FileNotFoundError, match="centroids.npy missing"):
    (tmp_path / "t" / "centroids.npy").unlink()
    extract.load_teacher_outputs(str(tmp_path / "t"))
