"""A miniature of the paper's data and teacher, in their native formats.

Stage ``rehearsal_data`` of ``configs/paper_rehearsal.py`` writes, from the
synthetic identities (``data/synthetic_faces.py``; disjoint identity ranges
per data set), under ``<workdir>/rehearsal_data`` (or
``config.rehearsal.root``):

* ``celeba/``: ``img_align_celeba/NNNNNN.jpg`` (178 x 218 JPEGs, the face on
  the aligned crop rows 20-198), ``identity_CelebA.txt``,
  ``list_landmarks_align_celeba.txt`` (count, header, rows) and
  ``list_eval_partition.txt``;
* ``lfw/<Name>/<Name>_NNNN.jpg`` (250 x 250, the face off-centre by a few
  pixels) and ``pairs.txt`` (10 folds of matched + mismatched pairs) plus
  ``lfw_landmarks.txt`` (CelebA row format, paths relative to ``lfw/``);
* ``AR/<m|w>-NNN-II.bmp`` (the AR naming; neutral 1 / 14, sunglasses 8 / 21,
  scarf 11 / 24, the occluders drawn on the face) plus ``ar_landmarks.txt``;
* ``teacher.pt``: a PyTorch state dict of the VGGFace2 ResNet-50 in the
  published layout (cydonia999/VGGFace2-pytorch names, 8,631 classes, random
  weights; needs torch), converted to ``teacher/`` with the converter
  (``deocc_jax.convert``) exactly as a user converts ``resnet50_ft_weight.pkl``;
* ``arcface.pt``: the baseline's "ArcFace model of a similar size to the
  student" (paper Sec. 4.2), an insightface arcface_torch IResNet state dict
  (random weights, ``config.rehearsal.arcface_*`` depth and widths), converted
  to ``arcface/`` with ``--arch iresnet --arch-config``; it is also Table 1's
  pretrained ArcFace row;
* ``vggface.pt`` / ``sphereface.pt``: Table 1's VGGFace (``vgg_face_dag.pth``
  layout) and SphereFace (``sphere20a`` layout) rows at narrow widths,
  converted to ``vggface/`` and ``sphereface/`` the same way.

It then points ``config.data.root``, ``config.teacher.path``,
``config.finetune_arcface.path``, ``config.evaluate.pretrained_recognizers`` and
the evaluation's LFW / AR paths at these files; every later stage is the paper
config's own. Process 0 writes (a finished copy is reused), the others wait.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from ml_collections import ConfigDict
from PIL import Image

from deocc_jax.data import masks as masks_lib
from deocc_jax.data.synthetic_faces import SyntheticFaces
from deocc_jax.errors import ConfigError

CELEBA_SIZE = (178, 218)  # width, height of img_align_celeba
CELEBA_FACE_TOP = 20  # the face square is rows 20-198
LFW_SIZE = 250
AR_SIZE = (192, 240)  # width, height (the real AR: 768 x 576)
AR_INDICES = {1: None, 14: None, 8: "sunglasses", 21: "sunglasses", 11: "scarf", 24: "scarf"}
_DONE = "REHEARSAL_DATA_DONE.json"


def _save_atomic(image: Image.Image, path: str, **kw: Any) -> None:
  tmp = f"{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}"
  image.save(tmp, **kw)
  os.replace(tmp, path)


def _write_text(path: str, lines: list[str]) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(tmp, path)


def _lm_row(name: str, lm: np.ndarray) -> str:
  return name + " " + " ".join(str(int(round(float(v)))) for v in np.asarray(lm).ravel())


def _paste(
    face: dict[str, np.ndarray],
    size: tuple[int, int],
    offset: tuple[int, int],
    background: tuple[int, int, int],
) -> tuple[Image.Image, np.ndarray]:
  canvas = Image.new("RGB", size, background)
  canvas.paste(Image.fromarray(face["image"]), offset)
  return canvas, face["landmarks"] + np.array(offset, np.float32)


def write_celeba(
    root: str, faces: SyntheticFaces, first: int, identities: int, images_per_identity: int
) -> None:
  """CelebA's native layout for ``identities`` synthetic identities from ``first``."""
  img_dir = os.path.join(root, "img_align_celeba")
  os.makedirs(img_dir, exist_ok=True)
  ids, lms, parts = [], [], []
  k = 0
  for i in range(identities):
    for j in range(images_per_identity):
      k += 1
      name = f"{k:06d}.jpg"
      rec = faces.render(first + i, j)
      img, lm = _paste(rec, CELEBA_SIZE, (0, CELEBA_FACE_TOP), (120, 110, 100))
      _save_atomic(img, os.path.join(img_dir, name), quality=95)
      ids.append(f"{name} {i + 1}")  # CelebA identity numbers start at 1
      lms.append(_lm_row(name, lm))
      parts.append(f"{name} {(0, 0, 0, 1, 2)[k % 5]}")
  _write_text(os.path.join(root, "identity_CelebA.txt"), ids)
  _write_text(
      os.path.join(root, "list_landmarks_align_celeba.txt"),
      [
          str(k),
          "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
          "leftmouth_x leftmouth_y rightmouth_x rightmouth_y",
      ]
      + lms,
  )
  _write_text(os.path.join(root, "list_eval_partition.txt"), parts)


def write_lfw(root: str, faces: SyntheticFaces, first: int, folds: int = 10) -> tuple[str, str]:
  """LFW's layout: ``folds`` people with 2 images each; ``pairs.txt`` with one
  matched pair (person f) and one mismatched pair (person f, image 1 vs person
  f + 1, image 2) per fold. Returns (pairs file, landmarks file)."""
  lfw = os.path.join(root, "lfw")
  rng = np.random.default_rng(7)
  people = [(f"Person_{chr(65 + i % 26)}{i:03d}", 2) for i in range(folds)]
  rows = []
  for i, (name, n) in enumerate(people):
    os.makedirs(os.path.join(lfw, name), exist_ok=True)
    for j in range(1, n + 1):
      rec = faces.render(first + i, j)
      side = rec["image"].shape[0]
      off = (LFW_SIZE - side) // 2 + rng.integers(-6, 7, size=2)
      img, lm = _paste(rec, (LFW_SIZE, LFW_SIZE), (int(off[0]), int(off[1])), (60, 70, 80))
      rel = f"{name}/{name}_{j:04d}.jpg"
      _save_atomic(img, os.path.join(lfw, rel), quality=95)
      rows.append(_lm_row(rel, lm))
  lines = [f"{folds}\t1"]
  for f in range(folds):
    lines.append(f"{people[f][0]}\t1\t2")
    lines.append(f"{people[f][0]}\t1\t{people[(f + 1) % folds][0]}\t2")
  pairs = os.path.join(root, "pairs.txt")
  _write_text(pairs, lines)
  lm_file = os.path.join(root, "lfw_landmarks.txt")
  _write_text(
      lm_file,
      [
          str(len(rows)),
          "lefteye_x lefteye_y righteye_x righteye_y nose_x "
          "nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y",
      ]
      + rows,
  )
  return pairs, lm_file


def write_ar(root: str, faces: SyntheticFaces, first: int, people: int) -> str:
  """AR's naming (``m-001-01.bmp``): neutral, sunglasses and scarf images of
  both sessions per person, the occluders drawn on. Returns the landmarks file."""
  ar = os.path.join(root, "AR")
  os.makedirs(ar, exist_ok=True)
  rows = []
  for p in range(people):
    person = f"{'mw'[p % 2]}-{p + 1:03d}"
    for k, (idx, occ) in enumerate(AR_INDICES.items()):
      rec = faces.render(first + p, k)
      side = rec["image"].shape[0]
      off = ((AR_SIZE[0] - side) // 2, (AR_SIZE[1] - side) // 2)
      image = rec["image"]
      if occ is not None:
        o = masks_lib.synthesize_ar_occlusion(
            np.random.default_rng([p, idx]), rec["landmarks"], side, side, occ
        )
        image = masks_lib.composite(image, o)
      img, lm = _paste(
          {"image": image, "landmarks": rec["landmarks"]}, AR_SIZE, off, (200, 200, 200)
      )
      name = f"{person}-{idx:02d}.bmp"
      _save_atomic(img, os.path.join(ar, name))
      rows.append(_lm_row(name, lm))
  lm_file = os.path.join(root, "ar_landmarks.txt")
  _write_text(
      lm_file,
      [
          str(len(rows)),
          "lefteye_x lefteye_y righteye_x righteye_y nose_x "
          "nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y",
      ]
      + rows,
  )
  return lm_file


# ---------------------------------------------------------------- networks

# cydonia999/VGGFace2-pytorch models/resnet.py: ResNet-50 = Bottleneck x (3, 4, 6, 3).
_RESNET50_LAYERS = ((64, 3), (128, 4), (256, 6), (512, 3))


class _StateDict:
  """Random torch tensors by PyTorch name: He-initialised convs, BatchNorm with
  unit statistics (``gamma`` scales a block's last BN down so a random deep
  network keeps its activations in range)."""

  def __init__(self, seed: int, network: str) -> None:
    try:
      import torch
    except ImportError as e:
      raise ImportError(
          f"the rehearsal writes a PyTorch state dict of the {network} and "
          "needs torch: pip install torch "
          "--index-url https://download.pytorch.org/whl/cpu "
          "(the CPU build; a plain `pip install torch` pulls a CUDA one)"
      ) from e
    self.torch = torch
    self.g = torch.Generator().manual_seed(int(seed))
    self.sd: dict[str, Any] = {}

  def conv(self, name: str, cout: int, cin: int, k: int) -> None:
    std = (2.0 / (cin * k * k)) ** 0.5
    self.sd[f"{name}.weight"] = self.torch.randn(cout, cin, k, k, generator=self.g) * std

  def bn(self, name: str, c: int, gamma: float = 1.0) -> None:
    t = self.torch
    self.sd[f"{name}.weight"] = t.full((c,), float(gamma))
    self.sd[f"{name}.bias"] = t.zeros(c)
    self.sd[f"{name}.running_mean"] = t.zeros(c)
    self.sd[f"{name}.running_var"] = t.ones(c)
    self.sd[f"{name}.num_batches_tracked"] = t.tensor(0, dtype=t.long)

  def linear(self, name: str, cout: int, cin: int) -> None:
    self.sd[f"{name}.weight"] = self.torch.randn(cout, cin, generator=self.g) * cin**-0.5
    self.sd[f"{name}.bias"] = self.torch.zeros(cout)


def vggface2_resnet50_state_dict(seed: int = 0, num_classes: int = 8631) -> dict[str, Any]:
  """Random weights for the published VGGFace2 ResNet-50 layout, as torch tensors
  (names and shapes of cydonia999's ``resnet50``)."""
  w = _StateDict(seed, "VGGFace2 teacher")
  w.conv("conv1", 64, 3, 7)
  w.bn("bn1", 64)
  cin = 64
  for li, (planes, blocks) in enumerate(_RESNET50_LAYERS, start=1):
    for b in range(blocks):
      pre = f"layer{li}.{b}"
      w.conv(f"{pre}.conv1", planes, cin, 1)
      w.bn(f"{pre}.bn1", planes)
      w.conv(f"{pre}.conv2", planes, planes, 3)
      w.bn(f"{pre}.bn2", planes)
      w.conv(f"{pre}.conv3", planes * 4, planes, 1)
      w.bn(f"{pre}.bn3", planes * 4, gamma=0.2)
      if b == 0:
        w.conv(f"{pre}.downsample.0", planes * 4, cin, 1)
        w.bn(f"{pre}.downsample.1", planes * 4)
      cin = planes * 4
  w.linear("fc", num_classes, 2048)
  return w.sd


def arcface_iresnet_state_dict(
    layers: tuple[int, ...], widths: tuple[int, ...], num_features: int, seed: int = 0
) -> dict[str, Any]:
  """Random weights in insightface's ArcFace IResNet layout (arcface_torch
  ``backbone.pth`` names: ``conv1``/``bn1``/``prelu`` stem, ``layerK.i`` blocks
  ``bn1-conv1-bn2-prelu-conv2-bn3`` + ``downsample``, then ``bn2``, ``fc``
  (flattened 7 x 7 map) and the ``features`` BatchNorm1d), no classifier."""
  w = _StateDict(seed, "ArcFace baseline")
  t = w.torch

  def prelu(name: str, c: int) -> None:
    w.sd[f"{name}.weight"] = t.full((c,), 0.25)

  w.conv("conv1", widths[0], 3, 3)
  w.bn("bn1", widths[0])
  prelu("prelu", widths[0])
  cin = widths[0]
  for li, (planes, blocks) in enumerate(zip(widths, layers), start=1):
    for b in range(blocks):
      pre = f"layer{li}.{b}"
      w.bn(f"{pre}.bn1", cin)
      w.conv(f"{pre}.conv1", planes, cin, 3)
      w.bn(f"{pre}.bn2", planes)
      prelu(f"{pre}.prelu", planes)
      w.conv(f"{pre}.conv2", planes, planes, 3)
      w.bn(f"{pre}.bn3", planes, gamma=0.2)
      if b == 0:  # every layer's first block has stride 2
        w.conv(f"{pre}.downsample.0", planes, cin, 1)
        w.bn(f"{pre}.downsample.1", planes)
      cin = planes
  w.bn("bn2", cin)
  w.linear("fc", num_features, cin * 7 * 7)
  w.bn("features", num_features)
  return w.sd


def vggface_vgg16_state_dict(
    widths: tuple[int, ...], fc_features: int, num_classes: int = 2622, seed: int = 0
) -> dict[str, Any]:
  """Random weights in the VGG Face layout of ``vgg_face_dag.pth`` (Albanie's
  port: ``convB_I`` 3x3 convs with bias, ``fc6`` / ``fc7`` / ``fc8``), at
  ``widths`` per block and ``fc_features`` for fc6 / fc7."""
  w = _StateDict(seed, "VGGFace row")
  t = w.torch
  cin = 3
  for b, (width, convs) in enumerate(zip(widths, (2, 2, 3, 3, 3)), start=1):
    for i in range(1, convs + 1):
      w.conv(f"conv{b}_{i}", width, cin, 3)
      w.sd[f"conv{b}_{i}.bias"] = t.zeros(width)
      cin = width
  w.linear("fc6", fc_features, cin * 7 * 7)
  w.linear("fc7", fc_features, fc_features)
  w.linear("fc8", num_classes, fc_features)
  return w.sd


def sphereface20_state_dict(
    widths: tuple[int, ...], num_features: int, num_classes: int = 10574, seed: int = 0
) -> dict[str, Any]:
  """Random weights in the layout of sphereface_pytorch's ``sphere20a``
  (``convS_J`` 3x3 convs with bias, each followed by PReLU ``reluS_J``; residual
  units after each stage's stride-2 conv; ``fc5`` on the 7 x 6 map; ``fc6``
  stored (in, out)), at ``widths`` per stage."""
  w = _StateDict(seed, "SphereFace row")
  t = w.torch
  cin = 3
  for stage, (width, units) in enumerate(zip(widths, (1, 2, 4, 1)), start=1):
    for j in range(1, 2 * units + 2):
      w.conv(f"conv{stage}_{j}", width, cin if j == 1 else width, 3)
      if j > 1 and j % 2 == 1:  # a unit's second conv: scaled so the sums stay in range
        w.sd[f"conv{stage}_{j}.weight"] *= 0.2
      w.sd[f"conv{stage}_{j}.bias"] = t.zeros(width)
      w.sd[f"relu{stage}_{j}.weight"] = t.full((width,), 0.25)
    cin = width
  w.linear("fc5", num_features, cin * 7 * 6)
  w.sd["fc6.weight"] = t.randn(num_features, num_classes, generator=w.g)
  return w.sd


def _convert(
    root: str, name: str, state_dict: dict[str, Any], arch: str, arch_config: dict | None
) -> str:
  """Saves ``state_dict`` as ``<root>/<name>.pt`` and converts it to ``<root>/<name>/``
  with the converter's command line, ``python -m deocc_jax.convert`` (with
  ``--arch-config`` for non-published widths), in a fresh single-process
  interpreter on the CPU, as a user does before a cluster run (also keeps the
  converter's Orbax save out of a multi-process job)."""
  import subprocess
  import sys

  import torch

  weights = os.path.join(root, f"{name}.pt")
  tmp = weights + f".tmp{os.getpid()}"
  torch.save(state_dict, tmp)
  os.replace(tmp, weights)
  out = os.path.join(root, name)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  cmd = [sys.executable, "-m", "deocc_jax.convert", "--arch", arch, "--weights", weights]
  if arch_config:
    cmd += ["--arch-config", json.dumps(arch_config)]
  cmd += ["--out", out, "--overwrite"]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(
        f"python -m deocc_jax.convert failed on {weights}:\n"
        f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
    )
  return out


def write_networks(root: str, r: ConfigDict) -> dict[str, str]:
  """The converted networks of the paper config, written and converted: the
  VGGFace2 ResNet-50 teacher (``teacher/``, published layout); the student-sized
  ArcFace IResNet the baseline fine-tunes, also Table 1's pretrained ArcFace row
  (``arcface/``); Table 1's VGGFace and SphereFace rows (``vggface/``,
  ``sphereface/``) in their published layouts at narrow widths. Returns their
  directories."""
  ints = lambda v: [int(x) for x in v]  # noqa: E731
  # name -> (state dict writer, --arch, --arch-config: the writer's own arguments)
  networks = {
      "teacher": (vggface2_resnet50_state_dict, "vggface2_resnet50", {}),
      "arcface": (
          arcface_iresnet_state_dict,
          "iresnet",
          {
              "layers": ints(r.arcface_layers),
              "widths": ints(r.arcface_widths),
              "num_features": int(r.arcface_features),
          },
      ),
      "vggface": (
          vggface_vgg16_state_dict,
          "vggface_vgg16",
          {"widths": ints(r.vggface_widths), "fc_features": int(r.vggface_fc_features)},
      ),
      "sphereface": (
          sphereface20_state_dict,
          "sphereface20",
          {"widths": ints(r.sphereface_widths), "num_features": int(r.sphereface_features)},
      ),
  }
  return {
      name: _convert(root, name, write(**cfg, seed=int(r.seed) + i), arch, cfg or None)
      for i, (name, (write, arch, cfg)) in enumerate(networks.items())
  }


# ------------------------------------------------------------------- stage


def paths(root: str) -> dict[str, str | tuple[str, ...]]:
  """Config field -> the miniature's file or folder for it."""
  return {
      "data.root": os.path.join(root, "celeba"),
      "teacher.path": os.path.join(root, "teacher"),
      # the baseline: a student-sized ArcFace IResNet, converted like the teacher
      "finetune_arcface.path": os.path.join(root, "arcface"),
      "evaluate.lfw_root": os.path.join(root, "lfw"),
      "evaluate.lfw_pairs": os.path.join(root, "pairs.txt"),
      "evaluate.lfw_landmarks": os.path.join(root, "lfw_landmarks.txt"),
      "evaluate.ar_root": os.path.join(root, "AR"),
      "evaluate.ar_landmarks": os.path.join(root, "ar_landmarks.txt"),
      # Table 1's rows of networks as published: VGGFace, SphereFace, ArcFace
      "evaluate.pretrained_recognizers": tuple(
          os.path.join(root, n) for n in ("vggface", "sphereface", "arcface")
      ),
  }


def write_all(root: str, r: ConfigDict) -> None:
  """Every miniature set and converted network under ``root`` (skipped when done)."""
  done = os.path.join(root, _DONE)
  spec = {  # as JSON reads it back (tuples are lists)
      k: list(r[k]) if isinstance(r[k], (tuple, list)) else r[k]
      for k in (
          "celeba_identities",
          "images_per_identity",
          "lfw_folds",
          "ar_people",
          "seed",
          "face_resolution",
          "arcface_layers",
          "arcface_widths",
          "arcface_features",
          "vggface_widths",
          "vggface_fc_features",
          "sphereface_widths",
          "sphereface_features",
      )
  }
  if os.path.exists(done):
    with open(done) as f:
      if json.load(f) == spec:
        return
  os.makedirs(root, exist_ok=True)
  n_celeba, n_lfw = int(r.celeba_identities), int(r.lfw_folds)
  faces = SyntheticFaces(
      n_celeba + n_lfw + int(r.ar_people),
      max(6, int(r.images_per_identity)),
      int(r.face_resolution),
      int(r.seed),
  )
  write_celeba(os.path.join(root, "celeba"), faces, 0, n_celeba, int(r.images_per_identity))
  # CelebA's aligned crop is 178 px wide: the face is rendered at that size.
  write_lfw(root, faces, n_celeba, int(r.lfw_folds))
  write_ar(root, faces, n_celeba + n_lfw, int(r.ar_people))
  write_networks(root, r)
  _write_text(done, [json.dumps(spec)])


def root_of(config: ConfigDict, workdir: str) -> str:
  """The local folder the miniature lives in: ``config.rehearsal.root``, or
  ``<workdir>/rehearsal_data``."""
  root = str(config.rehearsal.root) or os.path.join(os.fspath(workdir), "rehearsal_data")
  if "://" in root:  # data-set roots are read as local folders (os / PIL)
    raise ConfigError(
        f"stage 'rehearsal_data' writes data sets, which are read from local "
        f"folders: {root} is not local; set config.rehearsal.root to a local "
        f"(or shared, mounted) folder"
    )
  return os.path.abspath(root)


def with_paths(config: ConfigDict, workdir: str) -> ConfigDict:
  """A copy of ``config`` whose data / teacher / LFW / AR paths point at the
  miniature (:func:`root_of`): resolved once, before a run starts and its
  config is written, so no stage changes the config."""
  out = config.copy_and_resolve_references()
  for key, value in paths(root_of(config, workdir)).items():
    section, field = key.split(".")
    out[section][field] = value
  return out


def run(config: ConfigDict, workdir: str) -> None:
  """Stage ``rehearsal_data``: writes the miniature (process 0; the others
  wait) where :func:`with_paths` pointed the run's config."""
  import jax
  from jax.experimental import multihost_utils

  r = config.rehearsal
  root = root_of(config, workdir)
  missing = {k: v for k, v in paths(root).items() if _field(config, k) != v}
  if missing:
    raise ConfigError(
        f"stage 'rehearsal_data' writes its miniature to {root}, but config fields "
        f"{sorted(missing)} point elsewhere: run it through deocc_jax.main (which sets them "
        "with data.rehearsal.with_paths)"
    )
  if jax.process_index() == 0:
    write_all(root, r)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("rehearsal_data written")
  print(
      f"rehearsal data in {root}: CelebA {r.celeba_identities} identities x "
      f"{r.images_per_identity}, LFW {r.lfw_folds} folds, AR {r.ar_people} people, "
      "VGGFace2 ResNet-50 teacher (random weights, 8,631 classes), ArcFace IResNet "
      f"{tuple(r.arcface_layers)} x {tuple(r.arcface_widths)} for the baseline, VGGFace "
      f"{tuple(r.vggface_widths)} and SphereFace {tuple(r.sphereface_widths)} rows"
  )


def _field(config: ConfigDict, key: str) -> str | tuple[str, ...]:
  section, field = key.split(".")
  value = config[section][field]
  return tuple(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
