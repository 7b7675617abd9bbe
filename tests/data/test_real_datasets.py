"""Real data set readers on tiny fixtures in their exact on-disk formats."""

import os

import numpy as np
import pytest
from PIL import Image

from deocc_jax.data import dataset_formats as formats
from deocc_jax.data import real_datasets as rd
from deocc_jax.data import pipeline as pl

from tests.helpers.real_fixtures import face_image as _face, make_ar, make_lfw  # noqa: E402


@pytest.fixture()
def celeba(tmp_path):
  root = tmp_path / "celeba"
  (root / "img_align_celeba").mkdir(parents=True)
  ids, parts, lms = [], [], []
  for i in range(14):
    name = f"{i + 1:06d}.jpg"
    img, lm = _face(i)
    img.save(root / "img_align_celeba" / name, quality=95)
    ids.append(f"{name} {100 + i // 2}")
    parts.append(f"{name} {0 if i < 10 else (1 if i < 12 else 2)}")
    lms.append(name + " " + " ".join(str(int(round(v))) for v in lm.ravel()))
  (root / "identity_CelebA.txt").write_text("\n".join(ids) + "\n")
  (root / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
  (root / "list_landmarks_align_celeba.txt").write_text(
      "14\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
      "rightmouth_x rightmouth_y\n" + "\n".join(lms) + "\n"
  )
  return root


def test_celeba_round_trip(celeba):
  tr = rd.CelebA(str(celeba), "train", resolution=64)
  va = rd.CelebA(str(celeba), "validation", resolution=64)
  te = rd.CelebA(str(celeba), "test", resolution=64)
  assert (len(tr), len(va), len(te)) == (10, 2, 2)
  r = tr[3]
  assert r["image"].shape == (64, 64, 3) and r["image"].dtype == np.uint8
  # Labels contiguous; identities 100..104 in train -> 0..4, two images each.
  assert sorted(set(tr.labels.tolist())) == [0, 1, 2, 3, 4]
  assert tr.identity_names == [100, 101, 102, 103, 104]
  # Landmarks follow the crop (0, 20, 178, 198) and the resize to 64.
  raw = formats.parse_landmarks_file(str(celeba / "list_landmarks_align_celeba.txt"))["000004.jpg"]
  np.testing.assert_allclose(r["landmarks"], (raw - [0, 20]) * 64 / 178, atol=1e-4)
  # The decoded image matches the source under the same crop and resize.
  src = np.asarray(
      Image.open(celeba / "img_align_celeba" / "000004.jpg").resize(
          (64, 64), Image.BILINEAR, box=(0, 20, 178, 198)
      )
  )
  np.testing.assert_array_equal(r["image"], src)


def test_celeba_random_6_1_split(celeba):
  tr = rd.CelebA(str(celeba), "train", partition="random_6_1", seed=1)
  va = rd.CelebA(str(celeba), "validation", partition="random_6_1", seed=1)
  assert (len(tr), len(va)) == (12, 2)
  assert not set(tr.paths) & set(va.paths)
  again = rd.CelebA(str(celeba), "validation", partition="random_6_1", seed=1)
  assert again.paths == va.paths


def test_celeba_feeds_the_pair_pipeline(celeba):
  src = rd.CelebA(str(celeba), "train", resolution=64)
  loader = pl.make_loader(src, pl.PipelineConfig(batch_size=4, seed=0))
  b = next(iter(loader))
  assert b["masked"].shape == (4, 64, 64, 3) and b["mask"].sum() > 0


def test_celeba_bad_inputs(celeba):
  lm = celeba / "list_landmarks_align_celeba.txt"
  lines = lm.read_text().splitlines()
  lines[5] = "000004.jpg 1 2 3"
  lm.write_text("\n".join(lines))
  with pytest.raises(
      formats.DatasetFormatError,
      match=r"list_landmarks_align_celeba.txt:6: " "expected a file name and 10 coordinates",
  ):
    rd.CelebA(str(celeba))
  (celeba / "identity_CelebA.txt").unlink()
  with pytest.raises(FileNotFoundError, match="identity_CelebA.txt"):
    rd.CelebA(str(celeba))


def test_corrupt_missing_grayscale_rgba_images(tmp_path):
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
  with pytest.raises(formats.DatasetFormatError, match=r"bad\.jpg: cannot decode image"):
    formats.read_image(str(bad))
  # A truncated JPEG (valid header, cut body) is also reported.
  good = tmp_path / "good.jpg"
  _face(0)[0].save(good)
  trunc = tmp_path / "trunc.jpg"
  trunc.write_bytes(good.read_bytes()[:300])
  with pytest.raises(formats.DatasetFormatError, match=r"trunc\.jpg"):
    formats.read_image(str(trunc))
  with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
    formats.read_image(str(tmp_path / "missing.jpg"))
  gray = tmp_path / "gray.png"
  Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(gray)
  g = formats.read_image(str(gray))
  assert g.shape == (8, 8, 3) and (g[..., 0] == g[..., 2]).all()
  assert g[0, 5, 1] == 5
  rgba = tmp_path / "rgba.png"
  arr = np.zeros((4, 4, 4), np.uint8)
  arr[..., 0] = 200
  arr[..., 3] = 255
  Image.fromarray(arr, "RGBA").save(rgba)
  x = formats.read_image(str(rgba))
  assert x.shape == (4, 4, 3) and (x[..., 0] == 200).all()


@pytest.fixture()
def lfw(tmp_path):
  return make_lfw(tmp_path)


def test_lfw_pairs_and_images(lfw):
  root, pairs = lfw
  ds = rd.LFW(str(root), str(pairs), resolution=48)
  assert len(ds) == 9 and ds.num_classes == 3
  assert len(ds.pairs) == 8
  assert [p.same for p in ds.pairs] == [True, True, False, False] * 2
  assert [p.fold for p in ds.pairs] == [0] * 4 + [1] * 4
  p = ds.pairs[4]
  assert p.path_a.endswith("Alice_A/Alice_A_0001.jpg") and p.path_b.endswith("Alice_A_0003.jpg")
  r = ds[ds.index_of(ds.pairs[2].path_b)]
  assert r["image"].shape == (48, 48, 3)
  assert ds.identity_names[int(r["identity"])] == "Bob_B"


@pytest.mark.parametrize(
    "bad_line,message",
    [
        ("Alice_A\t1", r"pairs.txt:2: expected a matched pair"),
        ("Alice_A\tx\t2", r"pairs.txt:2: image number 'x' is not an integer"),
        ("Alice_A\t1\t9", r"pairs.txt:2: image not found: .*Alice_A_0009.jpg"),
    ],
)
def test_lfw_malformed_pairs(lfw, bad_line, message):
  root, pairs = lfw
  lines = pairs.read_text().splitlines()
  lines[1] = bad_line
  pairs.write_text("\n".join(lines) + "\n")
  with pytest.raises((formats.DatasetFormatError, FileNotFoundError), match=message):
    rd.LFW(str(root), str(pairs))


def test_lfw_bad_header_and_count(lfw):
  root, pairs = lfw
  lines = pairs.read_text().splitlines()
  pairs.write_text("\n".join(["ten folds"] + lines[1:]))
  with pytest.raises(formats.DatasetFormatError, match=r"pairs.txt:1: expected header"):
    rd.LFW(str(root), str(pairs))
  pairs.write_text("\n".join(lines[:-1]))
  with pytest.raises(formats.DatasetFormatError, match="header promises 2 folds x 2 x 2 = 8"):
    rd.LFW(str(root), str(pairs))


def test_ar_subsets_and_names(tmp_path):
  root = make_ar(tmp_path)
  g = rd.ARFace(str(root), "neutral")
  s = rd.ARFace(str(root), "sunglasses")
  c = rd.ARFace(str(root), "scarf")
  assert (len(g), len(s), len(c)) == (4, 4, 4)
  assert g.people == ["m-001", "w-002"] and s.num_classes == 2
  assert sorted(s.labels.tolist()) == [0, 0, 1, 1]
  assert all(os.path.basename(p)[6:8] in ("08", "21") for p in s.paths)
  assert formats.parse_ar_name("W-002-24.BMP") == ("w-002", 2, 24)
  assert s[0]["image"].shape == (64, 64, 3)
  (root / "w-003-27.bmp").write_bytes(b"")
  with pytest.raises(formats.DatasetFormatError, match=r"w-003-27.bmp: AR image index 27"):
    rd.ARFace(str(root))
  with pytest.raises(ValueError, match="unknown AR subset"):
    rd.ARFace(str(tmp_path), "hats")


def test_image_folder_with_landmarks(tmp_path):
  root = tmp_path / "faces"
  rows = []
  for ident in ("x", "y"):
    (root / ident).mkdir(parents=True)
    for j in range(2):
      img, lm = _face(j + (ident == "y") * 2, (128, 128))
      img.save(root / ident / f"{j}.png")
      rows.append(f"{ident}/{j}.png " + " ".join(f"{v:.1f}" for v in lm.ravel()))
  (tmp_path / "lm.txt").write_text("\n".join(rows) + "\n")
  ds = rd.ImageFolder(str(root), resolution=64, landmarks_file=str(tmp_path / "lm.txt"))
  assert len(ds) == 4 and ds.identity_names == ["x", "y"]
  assert ds[2]["identity"] == 1
  np.testing.assert_allclose(
      ds[0]["landmarks"],
      formats.parse_landmarks_file(str(tmp_path / "lm.txt"))["x/0.png"] / 2,
      atol=1e-4,
  )
  (tmp_path / "lm.txt").write_text(rows[0] + "\n")
  with pytest.raises(formats.DatasetFormatError, match=r"lm.txt: no landmarks for \['x/1.png'"):
    rd.ImageFolder(str(root), landmarks_file=str(tmp_path / "lm.txt"))
  with pytest.raises(formats.DatasetFormatError, match="no images found"):
    rd.ImageFolder(str(tmp_path))  # holds only folders of folders and lm.txt


def test_tfds_celeba_builder_round_trip_without_tensorflow(celeba, tmp_path):
  import sys
  import tensorflow_datasets as tfds
  from deocc_jax.data import tfds_builders as tb

  b = tb.CelebAFaces(data_dir=str(tmp_path / "tfds"), file_format="array_record")
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(celeba)))
  sources = b.as_data_source()
  assert {k: len(v) for k, v in sources.items()} == {"train": 10, "validation": 2, "test": 2}
  assert "tensorflow" not in sys.modules  # TFDS ran without TensorFlow
  via_tfds = tb.TFDSFaceSource(sources["train"], resolution=64, crop=(0, 20, 178, 198))
  plain = rd.CelebA(str(celeba), "train", resolution=64)
  by_name = {os.path.basename(plain.paths[i]): i for i in range(len(plain))}
  for i in range(len(via_tfds)):
    a = via_tfds[i]
    p = plain[by_name[a["path"]]]
    # Same JPEG bytes; TFDS's decoder may round differently from PIL's by 1.
    diff = np.abs(a["image"].astype(int) - p["image"].astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.7, (diff.max(), diff.mean())
    np.testing.assert_allclose(a["landmarks"], p["landmarks"], atol=1e-5)
    assert a["identity"] == p["identity"]
  batch = next(iter(pl.make_loader(via_tfds, pl.PipelineConfig(batch_size=4))))
  assert batch["masked"].shape == (4, 64, 64, 3)


def test_tfds_face_folder_builder(tmp_path):
  import tensorflow_datasets as tfds
  from deocc_jax.data import tfds_builders as tb

  root = tmp_path / "faces"
  for ident in ("p", "q"):
    (root / ident).mkdir(parents=True)
    for j in range(2):
      _face(j, (96, 96))[0].convert("L").save(root / ident / f"{j}.png")  # grayscale
  b = tb.FaceFolder(data_dir=str(tmp_path / "tfds"), file_format="array_record")
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  src = tb.TFDSFaceSource(b.as_data_source()["train"], resolution=32)
  assert len(src) == 4
  r = src[3]
  assert r["image"].shape == (32, 32, 3) and r["identity"] in (0, 1)
  np.testing.assert_allclose(r["landmarks"], rd.DEFAULT_RELATIVE_LANDMARKS * 32)


# ------------------------------------------------- held-out identities (issue 10)


def test_celeba_holdout_identities_leave_every_training_split(celeba):
  """random_6_1 splits images: its validation identities were all trained on.
  holdout_identities removes a seeded identity set from train / validation
  and makes it the split 'heldout'."""
  tr = rd.CelebA(str(celeba), "train", partition="random_6_1", seed=1)
  va = rd.CelebA(str(celeba), "validation", partition="random_6_1", seed=1)
  assert set(va.identity_names) <= set(tr.identity_names)  # the problem: shared identities
  kw = dict(partition="random_6_1", seed=1, holdout_identities=2)
  tr, va, ho = (rd.CelebA(str(celeba), s, **kw) for s in ("train", "validation", "heldout"))
  ids = formats.parse_two_columns(str(celeba / "identity_CelebA.txt"))
  held = {ids[os.path.basename(p)] for p in ho.paths}
  assert len(held) == 2 and ho.heldout_identities == held
  assert len(ho) == sum(1 for v in ids.values() if v in held)  # every image of them
  for split in (tr, va):
    assert not held & {ids[os.path.basename(p)] for p in split.paths}
  assert len(tr) + len(va) + len(ho) == len(ids)
  # A fraction works too, and the same seed gives the same identities.
  again = rd.CelebA(
      str(celeba), "heldout", partition="random_6_1", seed=1, holdout_identities=2 / 7
  )
  assert again.paths == ho.paths
  with pytest.raises(ValueError, match="holdout_identities"):
    rd.CelebA(str(celeba), "heldout", partition="random_6_1")
  with pytest.raises(ValueError, match="fewer than all"):
    rd.CelebA(str(celeba), "train", holdout_identities=7)


# ------------------------------------------- LFW / AR aligned like CelebA (issue 10)


def _reference_align(image, lm, template, size):
  """Independent float64 reference: the similarity template -> image solved
  with complex numbers (z' = a z + b), bilinear sampling with scipy."""
  from scipy import ndimage

  src = template[:, 0] + 1j * template[:, 1]
  dst = lm[:, 0] + 1j * lm[:, 1]
  sc, dc = src - src.mean(), dst - dst.mean()
  a = np.vdot(sc, dc) / np.vdot(sc, sc)
  b = dst.mean() - a * src.mean()
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
  z = a * (xs + 1j * ys) + b
  img = np.asarray(image, np.float64)
  out = np.stack(
      [ndimage.map_coordinates(img[..., c], [z.imag, z.real], order=1, cval=0.0) for c in range(3)],
      -1,
  )
  lm_out = (dst - b) / a
  return out, np.stack([lm_out.real, lm_out.imag], -1)


def test_lfw_faces_aligned_by_landmarks_onto_the_training_template(lfw, tmp_path):
  root, pairs = lfw
  rows, truth = [], {}
  for k, n in enumerate(["Alice_A", "Bob_B", "Carol_C"]):
    for j in range(1, 4):
      _, lm = _face(k * 3 + j, (250, 250))
      rel = f"{n}/{n}_{j:04d}.jpg"
      truth[rel] = np.round(lm.astype(np.float64), 2)
      rows.append(rel + " " + " ".join(f"{v:.2f}" for v in lm.ravel()))
  lm_file = tmp_path / "lfw_landmarks.txt"
  lm_file.write_text("\n".join(rows) + "\n")
  # 96 px: the warp shrinks by < 2x, so no pyramid (the reference is plain bilinear).
  template = rd.DEFAULT_RELATIVE_LANDMARKS * 96 + np.array([0.0, 2.0], np.float32)
  src = rd.LFW(str(root), str(pairs), resolution=96, landmarks_file=str(lm_file), align_to=template)
  for i in (0, 4):
    rec = src[i]
    rel = os.path.relpath(src.paths[i], root)
    want_img, want_lm = _reference_align(
        np.asarray(Image.open(src.paths[i]).convert("RGB")),
        truth[rel].astype(np.float64),
        template.astype(np.float64),
        96,
    )
    assert rec["image"].shape == (96, 96, 3) and rec["image"].dtype == np.uint8
    np.testing.assert_allclose(rec["landmarks"], want_lm, atol=1e-3)
    # The aligned landmarks sit on the template (5 points, least squares).
    assert np.abs(rec["landmarks"] - template).max() < 3.0
    inner = (slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(rec["image"][inner], want_img[inner], atol=1.01)
  # Not the old fixed central crop: the crop-and-resize output differs.
  plain = rd.LFW(str(root), str(pairs), resolution=96)[0]["image"]
  assert np.abs(plain.astype(int) - src[0]["image"].astype(int)).mean() > 5


def test_detector_supplies_missing_landmarks_and_misses_are_counted(tmp_path):
  root = make_ar(tmp_path)
  template = rd.DEFAULT_RELATIVE_LANDMARKS * 40
  calls = []

  def detector(image):  # records are read in order; the first face is "missed"
    calls.append(image.shape)
    if len(calls) == 1:
      raise ValueError("no face")
    lm = _face(int(os.path.basename(paths[len(calls) - 1]).split("-")[2][:2]), (120, 165))[1]
    return np.stack([lm + 50, lm])  # (F, 5, 2): the widest face is taken (equal here)

  src = rd.ARFace(str(root), "sunglasses", resolution=40, align_to=template, detector=detector)
  paths = src.paths
  recs = [src[i] for i in range(len(src))]
  assert len(calls) == len(src) and src.undetected == {paths[0]}
  for rec, p in zip(recs[1:], paths[1:]):
    lm = _face(int(os.path.basename(p).split("-")[2][:2]), (120, 165))[1] + 50
    _, want_lm = _reference_align(
        formats.read_image(p), lm.astype(np.float64), template.astype(np.float64), 40
    )
    np.testing.assert_allclose(rec["landmarks"], want_lm, atol=1e-3)
  with pytest.raises(ValueError, match="unknown landmark detector"):
    rd.make_detector("opencv")
  assert rd.make_detector("") is None
  with pytest.raises(ValueError, match="cannot import"):
    rd.make_detector("numpy:no_such_function")
