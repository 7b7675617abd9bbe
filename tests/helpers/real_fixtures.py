"""Tiny real-format data set folders (LFW, AR) built from synthetic faces,
shared by the reader tests and the evaluation tests."""

import numpy as np
from PIL import Image

from deocc_jax.data.synthetic_faces import SyntheticFaces


def face_image(i, size=(178, 218)):
  """A synthetic face pasted into an image of CelebA's size, plus landmarks."""
  r = SyntheticFaces(identities=50, images_per_identity=2, resolution=128, seed=2)[i]
  canvas = Image.new("RGB", size, (90, 90, 90))
  ox, oy = (size[0] - 128) // 2, (size[1] - 128) // 2
  canvas.paste(Image.fromarray(r["image"]), (ox, oy))
  return canvas, r["landmarks"] + np.array([ox, oy], np.float32)


def make_lfw(tmp_path):
  """An LFW folder (3 people x 3 images, 250 x 250 JPEGs) and a 2-fold pairs.txt."""
  root = tmp_path / "lfw"
  names = ["Alice_A", "Bob_B", "Carol_C"]
  for k, n in enumerate(names):
    (root / n).mkdir(parents=True)
    for j in range(1, 4):
      face_image(k * 3 + j, (250, 250))[0].save(root / n / f"{n}_{j:04d}.jpg")
  lines = ["2\t2"]
  for fold in range(2):
    lines += [f"Alice_A\t1\t{2 + fold}", "Bob_B\t2\t3"]
    lines += [f"Alice_A\t1\tBob_B\t{1 + fold}", "Carol_C\t3\tBob_B\t1"]
  (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
  return root, tmp_path / "pairs.txt"


def make_ar(tmp_path):
  """An AR folder: 2 people x (neutral, sunglasses, scarf) x 2 sessions."""
  root = tmp_path / "AR"
  root.mkdir()
  for person in ("m-001", "w-002"):
    for idx in (1, 8, 11, 14, 21, 24):
      face_image(idx, (120, 165))[0].save(root / f"{person}-{idx:02d}.bmp")
  return root
