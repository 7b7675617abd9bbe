"""Every classical recogniser identifies synthetic faces well above chance.

Protocol in miniature: the subspaces are fitted on training identities,
gallery = the first 2 images of each of 10 held-out identities, probes = their
other 4 (clean). Chance is 1 / 10. The faces are the 16 x 16 centre of 32 px
renders (the synthetic backgrounds change from image to image and would
dominate a pixel-space recogniser; AR's backgrounds are plain).
"""

import numpy as np
import pytest

from deocc_jax.baselines import gabor, src, subspace
from deocc_jax.data.synthetic_faces import SyntheticFaces

CHANCE = 0.1


def _faces(identities, per, seed):
  s = SyntheticFaces(identities, per, resolution=32, seed=seed, nuisance_strength=0.5)
  recs = [s[i] for i in range(len(s))]
  x = np.stack([r["image"][8:24, 8:24] for r in recs]).astype(np.float32) / 127.5 - 1
  return x, np.array([int(r["identity"]) for r in recs])


@pytest.fixture(scope="module")
def faces():
  train, _ = _faces(20, 4, seed=0)
  test, labels = _faces(10, 6, seed=1)
  gallery = np.arange(len(labels)) % 6 < 2
  return train, test, labels, gallery


def _rank1(emb, labels, gallery):
  emb = np.asarray(emb)
  pred = subspace.nearest_neighbour(emb[gallery], labels[gallery], emb[~gallery])
  return float(np.mean(pred == labels[~gallery]))


def test_eigenfaces_identify(faces):
  train, test, labels, gallery = faces
  model = subspace.fit_pca(train, 30)
  assert _rank1(subspace.embed(model, test), labels, gallery) >= 4 * CHANCE


def test_laplacianfaces_identify(faces):
  train, test, labels, gallery = faces
  model = subspace.fit_lpp(train, dims=10, pca_dims=30, neighbours=3)
  assert _rank1(subspace.embed(model, test), labels, gallery) >= 4 * CHANCE


def test_gabor_pca_identifies(faces):
  train, test, labels, gallery = faces
  model = gabor.fit_gabor_pca(train, 30, gabor.gabor_bank(size=11), stride=2)
  assert _rank1(gabor.embed_gabor_pca(model, test, stride=2), labels, gallery) >= 4 * CHANCE


def test_src_identifies(faces):
  _, test, labels, gallery = faces
  feats = src.src_features(test, (16, 16))
  dic = src.make_dictionary(feats[gallery], labels[gallery])
  pred, _ = src.classify(dic, feats[~gallery], lam=1e-3, num_iters=300, occlusion=True)
  assert np.mean(pred == labels[~gallery]) >= 4 * CHANCE
