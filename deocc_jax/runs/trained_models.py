"""Trained models as artefacts: what each stage writes, and how a model is
rebuilt from its artefact alone (``runs/artefacts.py``).

``*_spec(...)`` say what a stage's artefact holds (the training runners pass
them to the loop); ``teacher_from`` / ``generator_from`` / ``segmenter_from``
/ ``embedder_from`` rebuild usable functions from an :class:`Artefact` -- no
optimizer, no training data, no run config: the architecture's config
section, the number of classes, the resolution, the teacher a student learnt
from and the mean training face are facts of the artefact. The registry's
restorers (``restore_*``) read the artefact a ``which`` names.
"""

from __future__ import annotations

import io
from typing import Any, Callable

import numpy as np
from etils import epath
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.data.pipeline import to_unit_range
from deocc_jax.errors import ConfigError
from deocc_jax.losses.arcface import ArcFaceHead
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import builders
from deocc_jax.teachers import api
from deocc_jax.utils import files

DATA_FACTS = "training_data_facts.npz"
PRETRAINED = ("dlib", "converted")


# ------------------------------------------------------- facts of the data


def mean_training_face(source: Any, max_records: int = 2000) -> dict[str, np.ndarray]:
  """{'mean_face': (H, W, 3) in [-1, 1], 'mean_landmarks': (5, 2) pixels} of
  a training source: the mean-face fill's content and the crop layout
  inference aligns faces to."""
  n = min(len(source), max_records)
  total = np.zeros(source[0]["image"].shape, np.float64)
  lms = np.zeros((5, 2), np.float64)
  for i in range(n):
    rec = source[i]
    total += to_unit_range(np.asarray(rec["image"]))
    lms += np.asarray(rec["landmarks"], np.float64)
  return {
      "mean_face": (total / n).astype(np.float32),
      "mean_landmarks": (lms / n).astype(np.float32),
  }


def data_facts(workdir: Any, make_source: Callable[[], Any]) -> dict[str, np.ndarray]:
  """The training data's mean face / landmarks, computed once per run
  (``<workdir>/training_data_facts.npz``, written atomically by each process
  that computes it: the same values)."""
  path = epath.Path(workdir) / DATA_FACTS
  if path.exists():
    with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  out = mean_training_face(make_source())
  buf = io.BytesIO()
  np.savez(buf, **out)
  path.parent.mkdir(parents=True, exist_ok=True)
  files.write_atomic(path, buf.getvalue())
  return out


def _section(cfg: ConfigDict) -> dict[str, Any]:
  return cfg.copy_and_resolve_references().to_dict()


def teacher_identity(config: ConfigDict, teacher: api.Teacher) -> dict[str, Any]:
  """Which teacher a model learnt from (recorded in its artefact)."""
  return network_identity(str(config.teacher.kind), str(config.teacher.path), teacher)


def network_identity(kind: str, path: str, teacher: api.Teacher) -> dict[str, Any]:
  """A network's kind, name, weights path and embedding size, with the input
  protocol it reads the training frame by (:func:`pretrained_in_frame`)."""
  out = {"kind": kind, "name": teacher.name, "path": path, "embed_dim": int(teacher.embed_dim)}
  if "input_protocol" in teacher.metadata:
    out["input_protocol"] = teacher.metadata["input_protocol"]
  if "step" in teacher.metadata:
    out["step"] = int(teacher.metadata["step"])
  return out


# ------------------------------------------------------------------ specs


def arcface_spec(
    cfg: ConfigDict, num_classes: int, resolution: int, arrays: dict[str, np.ndarray], **facts: Any
) -> art.Spec:
  """The ArcFace teacher trained here (and the fine-tuned copy of it)."""
  return art.Spec(
      "arcface",
      lambda s: {"params": s["params"], "batch_stats": s["batch_stats"]},
      {
          "config": _section(cfg),
          "num_classes": int(num_classes),
          "resolution": int(resolution),
          "embed_dim": int(cfg.embed_dim),
          **facts,
      },
      arrays,
  )


def pretrained_teacher_spec(config: ConfigDict, teacher: api.Teacher) -> art.Spec:
  """A reference to a pretrained teacher's weights (nothing trained here)."""
  return art.Spec(
      "teacher",
      lambda s: {},
      {"teacher": teacher_identity(config, teacher), "resolution": int(config.data.resolution)},
  )


def generator_spec(
    cfg: ConfigDict,
    resolution: int,
    arrays: dict[str, np.ndarray],
    architecture: str = "deepfill",
) -> art.Spec:
  """A completion network (``state['g']``) and its architecture
  (``builders.ARCHITECTURES``: DeepFill's G, GFC, IDGAN)."""
  if architecture not in builders.ARCHITECTURES:
    raise ValueError(f"architecture {architecture!r} is not one of {builders.ARCHITECTURES}")
  return art.Spec(
      "generator",
      lambda s: {"params": s["g"]},
      {"config": _section(cfg), "resolution": int(resolution), "architecture": architecture},
      arrays,
  )


def segmenter_spec(cfg: ConfigDict, resolution: int, arrays: dict[str, np.ndarray]) -> art.Spec:
  return art.Spec(
      "segmenter",
      lambda s: {"params": s["params"]},
      {"config": _section(cfg), "resolution": int(resolution)},
      arrays,
  )


def finetuned_spec(
    config: ConfigDict,
    identity: dict[str, Any],
    teacher: api.Teacher,
    num_classes: int,
    arrays: dict[str, np.ndarray],
    **facts: Any,
) -> art.Spec:
  """A fine-tuned pretrained (converted) network: its variables, trained;
  ``identity`` names the network it started from (rebuilt when restored)."""
  return art.Spec(
      "finetuned",
      lambda s: {**s["fixed"], "params": s["params"]["backbone"]},
      {
          "teacher": identity,
          "num_classes": int(num_classes),
          "resolution": int(config.data.resolution),
          "embed_dim": int(teacher.embed_dim),
          **facts,
      },
      arrays,
  )


def student_spec(
    cfg: ConfigDict,
    config: ConfigDict,
    teacher: api.Teacher,
    num_classes: int,
    arrays: dict[str, np.ndarray],
    **facts: Any,
) -> art.Spec:
  return art.Spec(
      "student",
      lambda s: {"params": s["params"], "batch_stats": s["batch_stats"]},
      {
          "config": _section(cfg),
          "num_classes": int(num_classes),
          "resolution": int(config.data.resolution),
          "embed_dim": int(teacher.embed_dim),
          "teacher": teacher_identity(config, teacher),
          **facts,
      },
      arrays,
  )


# ------------------------------------------------------- from an artefact


def _cfg(a: art.Artefact) -> ConfigDict:
  return ConfigDict(a.facts["config"])


def _expect(a: art.Artefact, *kinds: str) -> None:
  if a.kind not in kinds:
    raise ValueError(f"artefact {a.path} holds a {a.kind!r}, not one of {kinds}")


def pretrained_teacher(identity: dict[str, Any]) -> api.Teacher:
  """The pretrained teacher an artefact names, reading the frame it was used in."""
  kind = str(identity["kind"])
  if kind not in PRETRAINED:
    raise ValueError(f"teacher kind {kind!r} is not a pretrained one {PRETRAINED}")
  teacher = api.load_teacher(kind, str(identity.get("path") or "") or None)
  p = identity.get("input_protocol")
  if p:
    teacher = api.in_frame(
        teacher, np.asarray(p["frame_landmarks"]), p["frame_size"], p["template"]
    )
  return teacher


def pretrained_in_frame(
    config: ConfigDict,
    teacher: api.Teacher,
    facts: Callable[[], dict[str, np.ndarray]],
    field: str = "teacher.input_protocol",
) -> api.Teacher:
  """A pretrained network as the run uses it: its input protocol (``config.<field>``)
  'auto' warps each training-frame face (mean landmarks from ``facts()``, the
  run's data facts) to the network's own crop; 'resize' resizes the frame."""
  mode = str(require(config, field))
  if mode == "resize":
    return teacher
  if mode != "auto":
    raise ConfigError(f"config.{field} must be 'auto' or 'resize', got {mode!r}")
  return api.in_frame(teacher, facts()["mean_landmarks"], int(config.data.resolution))


def teacher_from(a: art.Artefact) -> api.Teacher:
  """The teacher of a 'teacher' stage's artefact: the ArcFace teacher trained
  here (embedding + scaled-cosine logits), or the pretrained one it names."""
  _expect(a, "arcface", "teacher")
  if a.kind == "teacher":
    return pretrained_teacher(a.facts["teacher"])
  cfg, res, n = _cfg(a), int(a.facts["resolution"]), int(a.facts["num_classes"])
  backbone = builders.teacher_backbone(cfg)
  head = ArcFaceHead(n)
  scale = float(cfg.arcface_scale)
  v = a.variables
  params = {
      "backbone": v["params"]["backbone"],
      "batch_stats": v["batch_stats"],
      "head": v["params"]["head"],
  }

  def apply(p, images):
    out = backbone.apply(
        {"params": p["backbone"], "batch_stats": p["batch_stats"]},
        api.resize_to(images, res),
        train=False,
    )
    cos = head.apply({"params": p["head"]}, out["embedding"])
    return {"embedding": api.l2_normalized(out["embedding"]), "logits": scale * cos}

  meta = {"artefact": a.path, "step": a.step, "num_classes": n}
  return api.Teacher("arcface", params, apply, int(cfg.embed_dim), res, meta, num_classes=n)


def generator_architecture(a: art.Artefact) -> str:
  """The completion network of a 'generator' artefact (written before GFC and
  IDGAN existed: DeepFill's G)."""
  _expect(a, "generator")
  return str(a.facts.get("architecture", "deepfill"))


def completion_from(a: art.Artefact) -> Callable[[Any, Any, Any], Any]:
  """(g_params, masked, mask) -> completed faces, of a 'generator' artefact's
  network (its parameters: ``a.variables['params']``)."""
  return builders.completion(generator_architecture(a), _cfg(a), int(a.facts["resolution"]))


def generator_from(a: art.Artefact) -> Callable[[Any, Any], Any]:
  """(masked, mask) -> completed faces."""
  f, params = completion_from(a), a.variables["params"]
  return lambda x, m: f(params, x, m)


def generator_identity(stage: str, a: art.Artefact) -> dict[str, Any]:
  """Which completion network a model trained on (recorded in its artefact)."""
  return {"stage": stage, "step": int(a.step), "architecture": generator_architecture(a)}


def segmenter_from(a: art.Artefact) -> Callable[[Any], Any]:
  """masked -> binary occlusion mask."""
  _expect(a, "segmenter")
  cfg = _cfg(a)
  return builders.predict_mask_fn(cfg, a.variables["params"], float(cfg.threshold))


def embedder_from(a: art.Artefact, teacher: api.Teacher | None = None) -> Callable[[Any], Any]:
  """L2-normalised embeddings of a recogniser's artefact; a fine-tuned
  pretrained teacher rebuilds its architecture from the teacher it names
  (``teacher``, when given, must be that one)."""
  _expect(a, "arcface", "student", "finetuned")
  v = a.variables
  if a.kind == "arcface":
    return builders.teacher_embed_fn(
        _cfg(a), {"params": v["params"], "batch_stats": v["batch_stats"]}
    )
  if a.kind == "student":
    return builders.student_embed_fn(
        _cfg(a), int(a.facts["embed_dim"]), {"params": v["params"], "batch_stats": v["batch_stats"]}
    )
  ident = a.facts["teacher"]
  if teacher is None or teacher.name != ident["name"]:
    teacher = pretrained_teacher(ident)
  fixed = {k: x for k, x in v.items() if k != "params"}
  return builders.finetuned_embed_fn(teacher, {"params": {"backbone": v["params"]}, "fixed": fixed})


# -------------------------------------------------- the registry's restorers


def restore_teacher(
    config: ConfigDict,
    workdir: str,
    which: int | str = "latest",
    stage: str = "teacher",
    deps: dict[str, Any] | None = None,
    facts: Callable[[], dict[str, np.ndarray]] | None = None,
) -> tuple[api.Teacher, int | None]:
  """(teacher, step): the 'teacher' stage's artefact; a pretrained teacher
  without one (its stage not run) comes from ``config.teacher``, reading the
  frame of the run's data facts (``facts()`` computes them where the workdir
  has none yet)."""
  kind = str(require(config, "teacher.kind"))
  if kind != "arcface" and kind not in PRETRAINED:
    raise ConfigError(f"config.teacher.kind must be 'arcface', 'dlib' or 'converted', got {kind!r}")
  if not art.has(workdir, stage) and kind in PRETRAINED:
    teacher = api.load_teacher(kind, str(config.teacher.path) or None)

    def written_facts() -> dict[str, np.ndarray]:
      path = epath.Path(workdir) / DATA_FACTS
      if not path.exists():
        raise ConfigError(
            f"the pretrained teacher reads training-frame faces by its own input protocol "
            f"(config.teacher.input_protocol='auto'), which needs the run's mean landmarks: "
            f"{path} is missing; run a training stage first (or set input_protocol='resize')"
        )
      return data_facts(workdir, None)

    return pretrained_in_frame(config, teacher, facts or written_facts), None
  a = art.read(workdir, stage, which)
  return teacher_from(a), (a.step if a.kind == "arcface" else None)


def restore_generator(
    config: ConfigDict,
    workdir: str,
    which: int | str = "latest",
    stage: str = "deocclusion",
    deps: dict[str, Any] | None = None,
) -> tuple[art.Artefact, int]:
  """(artefact, step) of a de-occlusion stage (``generator_from`` completes;
  ``.variables['params']`` are G's parameters, a later stage's frozen input)."""
  a = art.read(workdir, stage, which)
  _expect(a, "generator")
  return a, a.step


def restore_segmenter(
    config: ConfigDict,
    workdir: str,
    which: int | str = "latest",
    stage: str = "segmentation",
    deps: dict[str, Any] | None = None,
) -> tuple[Callable[[Any], Any], int]:
  """(predict_mask_fn, step) of the occlusion segmenter."""
  a = art.read(workdir, stage, which)
  return segmenter_from(a), a.step


def restore_recognizer(
    config: ConfigDict,
    workdir: str,
    which: int | str = "latest",
    stage: str = "distill_hard",
    deps: dict[str, Any] | None = None,
) -> tuple[Callable[[Any], Any], int]:
  """(embed_fn, step) of a trained recogniser (student, fine-tuned baseline)."""
  a = art.read(workdir, stage, which)
  return embedder_from(a, (deps or {}).get("teacher")), a.step
