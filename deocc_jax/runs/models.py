"""Loading every trained model of a run for evaluation and inference.

``restore_models(config, workdir, checkpoint)`` returns a :class:`Models`:
the recognisers (teacher, fine-tuned ArcFace baseline, hard / soft students
-- those whose stages wrote artefacts), the frozen generator, the occlusion
segmenter and the mean training face. Everything comes from the stages'
trained artefacts (``runs/artefacts.py``: variables + facts), never from
their training checkpoints: no optimizer, no training data; of the config
only ``teacher`` is read, for a pretrained teacher whose stage did not run.

Artefact selection (:func:`checkpoint_choice`): per stage in
``config.evaluate.checkpoints`` (``default`` for every stage, a stage's own
field for it: ``--config.evaluate.checkpoints.distill_soft=best``), or one
choice for every stage (``--checkpoint``): ``latest``, ``best`` (the stage must
rank its checkpoints by a metric) or a step number.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np
from ml_collections import ConfigDict

from deocc_jax.configs import require
from deocc_jax.errors import ConfigError
from deocc_jax.runs import artefacts as art
from deocc_jax.runs import classical_rows, factories, kinds, library_fill, trained_models
from deocc_jax.runs.workdir import as_path
from deocc_jax.teachers import api

# recogniser key -> (stage whose artefacts hold it, display name), from runs/kinds.py
RECOGNIZERS = {k: (t.stage, t.display) for k, t in kinds.recognizers().items()}
# Pretrained recognisers used as they are (config.evaluate.pretrained_recognizers):
# architecture -> the tables' name. Key of the row: 'pretrained_<architecture>'.
PRETRAINED_NAMES = {
    "dlib": "dlib ResNet",
    "vggface_vgg16": "VGGFace (VGG-16)",
    "sphereface20": "SphereFace-20",
    "vggface2_resnet50": "VGGFace2 ResNet-50",
    "vggface2_senet50": "VGGFace2 SE-ResNet-50",
    "inception_resnet_v1": "FaceNet InceptionResnetV1",
}
# the stages whose checkpoints hold a model evaluation restores
STAGES = tuple(kinds.TRAINED)

EmbedFn = Callable[[jax.Array], jax.Array]


CHOICES = ("latest", "best")  # or a step number


def _checkpoint_value(v: Any, where: str) -> int | str:
  v = str(v).strip()
  if v in CHOICES:
    return v
  if v.isdigit():
    return int(v)
  raise ConfigError(f"{where}={v!r}: use 'latest', 'best' or a step number")


def checkpoint_choice(checkpoints: Mapping[str, Any] | str | int) -> dict[str, int | str]:
  """Which checkpoint of each stage to restore -> {stage or '*': 'latest' | 'best' | step}.

  ``checkpoints``: a per-stage mapping such as ``config.evaluate.checkpoints``
  (``default``, and a stage's own entry, '' = the default), or one choice for
  every stage ('latest' | 'best' | a step). The former string form
  ('latest,distill_soft=best') is refused with its equivalent.
  """
  if isinstance(checkpoints, (Mapping, ConfigDict)):
    unknown = [k for k in checkpoints.keys() if k != "default" and k not in STAGES]
    if unknown:
      raise ConfigError(
          f"config.evaluate.checkpoints names unknown stage(s) {unknown}; stages: {STAGES}"
      )
    if "default" not in checkpoints:
      raise ConfigError(
          "config.evaluate.checkpoints needs 'default' (the choice of every stage not named)"
      )
    out = {"*": _checkpoint_value(checkpoints["default"], "checkpoints.default")}
    for stage, v in checkpoints.items():
      if stage != "default" and str(v).strip():
        out[stage] = _checkpoint_value(v, f"checkpoints.{stage}")
    return out
  text = str(checkpoints).strip()
  if "," in text or "=" in text:
    raise ConfigError(
        f"checkpoint {text!r}: the per-stage string form is gone; choose per stage in "
        f"config.evaluate.checkpoints instead: {_as_overrides(text)}"
    )
  return {"*": _checkpoint_value(text, "checkpoint")}


def _as_overrides(text: str) -> str:
  """The former 'latest,distill_soft=best' as config.evaluate.checkpoints overrides."""
  out = []
  for item in (i.strip() for i in text.split(",")):
    if item:
      stage, _, v = item.rpartition("=")
      out.append(f"--config.evaluate.checkpoints.{stage.strip() or 'default'}={v.strip()}")
  return " ".join(out)


def config_checkpoints(config: ConfigDict) -> ConfigDict:
  """``config.evaluate.checkpoints``; a config holding the former string field
  ``evaluate.checkpoint`` (an older run's config.json) is refused, with the
  fields to write instead (silently ignoring it would evaluate other checkpoints)."""
  e = require(config, "evaluate")
  if "checkpoint" in e:
    old = str(e.checkpoint)
    raise ConfigError(
        f"config.evaluate.checkpoint={old!r} is no longer read: the checkpoint of each "
        f"stage is config.evaluate.checkpoints ({_as_overrides(old)}); in a run's "
        f'config.json replace "checkpoint": {json.dumps(old)} in "evaluate" by '
        f'"checkpoints": {json.dumps(_as_mapping(old))}'
    )
  return require(config, "evaluate.checkpoints")


def _as_mapping(text: str) -> dict[str, str]:
  out = {"default": "latest"}
  for item in (i.strip() for i in text.split(",")):
    if item:
      stage, _, v = item.rpartition("=")
      out[stage.strip() or "default"] = v.strip()
  return out


@dataclasses.dataclass
class Models:
  resolution: int
  recognizers: dict[str, EmbedFn]  # key (RECOGNIZERS) -> L2-normalised embeddings
  complete: Callable[[jax.Array, jax.Array], jax.Array] | None  # (masked, mask) -> completed
  segment: Callable[[jax.Array], jax.Array] | None  # masked -> binary mask
  mean_face: np.ndarray  # (H, W, 3) mean training face in [-1, 1]
  mean_landmarks: np.ndarray  # (5, 2) mean training landmarks, pixels
  steps: dict[str, int]  # stage -> restored step
  teacher: Any  # the api.Teacher (frozen recogniser of clean faces)
  generator: Any  # G's parameters, or None
  # every trained completion network (Table 2's methods): de-occlusion stage
  # ('deocclusion', 'deocclusion_noca', 'deocclusion_gfc', 'deocclusion_idgan')
  # -> (masked, mask) -> completed; only the stages that ran ('deocclusion' is
  # ``complete``; evaluation.evaluator.COMPLETED_BY: which input each makes)
  completions: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = dataclasses.field(
      default_factory=dict
  )
  # rows of pretrained and classical recognisers: key -> display name
  pretrained: dict[str, str] = dataclasses.field(default_factory=dict)
  # identification-only rows (SR): key -> (gallery features, gallery labels,
  # probe features) -> (identities (C,), scores (P, C), higher = better); their
  # recognizers[key] makes the features. No verification row.
  identifiers: dict[str, classical_rows.IdentifyFn] = dataclasses.field(default_factory=dict)
  # the RPCA / GL fills of config.evaluate.inputs (library_fill.py): input key ->
  # (masked, mask) -> completed, and their library of clean training faces
  fills: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = dataclasses.field(
      default_factory=dict
  )
  fill_library: np.ndarray | None = None

  def __post_init__(self) -> None:
    if self.complete is not None:
      self.completions.setdefault("deocclusion", self.complete)

  def display(self, key: str) -> str:
    if key in self.pretrained:
      return self.pretrained[key]
    name = RECOGNIZERS[key][1]
    if key == "teacher_finetuned":
      return f"teacher ({self.teacher.name}) fine-tuned"
    return f"teacher ({self.teacher.name})" if key == "teacher" else name


def pretrained_recognizers(config: ConfigDict) -> dict[str, tuple[str, str]]:
  """``config.evaluate.pretrained_recognizers`` -> {row key: (entry, display name)}.

  Each entry is ``'dlib'`` (ships on PyPI) or the directory of a teacher
  converted with ``python -m deocc_jax.convert`` (VGGFace, SphereFace, VGGFace2,
  FaceNet, ArcFace IResNets): a row of every table, the network used as
  published (not trained or fine-tuned here), fed each face through its own
  input protocol. The key is ``pretrained_<architecture>``; two entries of one
  architecture are refused."""
  from deocc_jax.conversion import checkpoint as converted

  out: dict[str, tuple[str, str]] = {}
  for entry in tuple(require(config, "evaluate.pretrained_recognizers")):
    entry = str(entry)
    if entry == "dlib":
      arch = "dlib"
    else:
      if not as_path(entry).is_dir():
        raise ConfigError(
            f"config.evaluate.pretrained_recognizers: {entry!r} is neither 'dlib' nor a "
            "directory written by python -m deocc_jax.convert"
        )
      arch = str(converted.load_metadata(entry)["architecture"])
    key = f"pretrained_{arch}"
    if key in out:
      raise ConfigError(
          f"config.evaluate.pretrained_recognizers: {out[key][0]!r} and {entry!r} are both "
          f"{arch!r}; one row per architecture"
      )
    name = PRETRAINED_NAMES.get(arch, f"ArcFace {arch}" if arch.startswith("iresnet") else arch)
    out[key] = (entry, f"{name}, pretrained")
  return out


def known_recognizers(
    config: ConfigDict, pretrained: dict[str, tuple[str, str]] | None = None
) -> list[str]:
  """Every recogniser key a run's config can restore, in the tables' order: the
  trained ones, then its pretrained and classical rows (``pretrained``: the
  config's :func:`pretrained_recognizers`, when already read)."""
  if pretrained is None:
    pretrained = pretrained_recognizers(config)
  return list(RECOGNIZERS) + list(pretrained) + classical_rows.keys(config)


def restore_models(
    config: ConfigDict,
    workdir: str,
    checkpoint: Mapping[str, Any] | str | int = "latest",
    recognizers: tuple[str, ...] | None = None,
) -> Models:
  """Restores what ``workdir`` holds; ``recognizers`` (default: all present)
  must all have checkpoints, else an error names the missing stage. Each
  model comes through its stage's restorer (``runs/kinds.py``)."""
  which = checkpoint_choice(checkpoint)
  pick = lambda stage: which.get(stage, which["*"])  # noqa: E731
  if not as_path(workdir).is_dir():
    raise FileNotFoundError(f"workdir {workdir!r} does not exist")
  extra = pretrained_recognizers(config)
  classical_keys = classical_rows.keys(config)
  known = known_recognizers(config, extra)
  wanted = tuple(known) if recognizers is None else tuple(recognizers)
  unknown = [r for r in wanted if r not in known]
  if unknown:
    raise ValueError(f"unknown recognizer(s) {unknown}; choose from {known}")
  classical = classical_rows.fit(
      config,
      lambda: factories.make_source(config, "train"),
      tuple(k for k in wanted if k in classical_keys),
  )
  steps: dict[str, int] = {}
  rec: dict[str, EmbedFn] = {}
  arrays: dict[str, np.ndarray] = {}
  facts: dict[str, dict[str, Any]] = {}

  def restore(stage: str, deps: dict[str, Any] | None = None) -> Any:
    out, step = kinds.get(stage).restore(config, workdir, pick(stage), stage, deps)
    if step is not None:
      steps[stage] = int(step)
      facts[stage] = art.read_facts(workdir, stage, int(step))
      if not arrays:
        arrays.update(art.read_arrays(workdir, stage, int(step)))
    return out

  generators = {
      t.stage: restore(t.stage) for t in kinds.of_role("generator") if art.has(workdir, t.stage)
  }
  teacher = restore("teacher")
  if "teacher" in wanted:
    rec["teacher"] = lambda x, t=teacher: t.apply(t.params, x)["embedding"]
  completions = {name: trained_models.generator_from(a) for name, a in generators.items()}
  g = generators["deocclusion"].variables["params"] if "deocclusion" in generators else None
  segment = restore("segmentation") if art.has(workdir, "segmentation") else None

  for key in wanted:
    if key == "teacher" or key in extra or key in classical:
      continue
    stage = RECOGNIZERS[key][0]
    if not art.has(workdir, stage):
      if recognizers is not None:
        raise FileNotFoundError(
            f"recognizer {key!r} needs stage {stage!r}, which has no trained artefacts "
            f"in {os.path.join(workdir, stage, 'artefacts')}"
        )
      continue
    rec[key] = restore(stage, {"teacher": teacher})
  if not arrays:
    raise FileNotFoundError(
        f"{workdir}: no trained artefact holds the mean training face (no stage that trains "
        "a model has run there)"
    )
  resolutions = {int(f["resolution"]) for f in facts.values() if "resolution" in f}
  if len(resolutions) > 1:
    raise ValueError(f"{workdir}: the artefacts disagree on the resolution: {facts}")
  res = resolutions.pop() if resolutions else int(arrays["mean_face"].shape[0])
  shown = {}
  for key in wanted:
    if key in extra:
      entry, shown[key] = extra[key]
      net = api.load_teacher("dlib") if entry == "dlib" else api.load_teacher("converted", entry)
      net = api.in_frame(net, np.asarray(arrays["mean_landmarks"]), res)  # its own crop
      rec[key] = lambda x, t=net: t.apply(t.params, x)["embedding"]
    elif key in classical:
      shown[key], rec[key] = classical[key]
  rec = {k: rec[k] for k in wanted if k in rec}  # the tables' row order
  fills, library = library_fill.make_fills(
      config, lambda: factories.make_source(config, "train"), res
  )
  return Models(
      res,
      rec,
      completions.get("deocclusion"),
      segment,
      arrays["mean_face"],
      arrays["mean_landmarks"],
      steps,
      teacher,
      g,
      completions=completions,
      pretrained=shown,
      identifiers={
          k: classical_rows.identifier(config) for k in rec if k in classical_rows.ONLY_ID
      },
      fills=fills,
      fill_library=library,
  )
