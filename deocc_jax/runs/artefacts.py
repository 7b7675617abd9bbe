"""Trained artefacts: what a stage hands to the stages, evaluation, inference and
export after it (issue 14).

A checkpoint is the *training* state (optimizer moments, data position, the
step); an artefact is the *trained model*: its variables (parameters and
batch statistics, nothing else) and the facts needed to use it, without the
optimizer, the training data or the run's config::

    <workdir>/<stage>/artefacts/step_0000400.npz

one ``.npz`` per checkpointed step, written at every checkpoint (so at the end
of the stage too) by the training loop. Inside: ``variables/<path>`` arrays,
``arrays/<name>`` (the mean training face and landmarks), and ``facts`` (JSON
as bytes): ``kind`` (what the model is: 'generator', 'segmenter', 'arcface',
'finetuned', 'student'), ``config`` (the section that builds the
architecture), ``resolution``, ``num_classes``, ``embed_dim``, ``teacher``
(which teacher a student / fine-tuned model learnt from), ``step``,
``stage``, ``metrics`` of that step and the ``best_metric`` / ``best_mode``
the stage ranks by.

Every process joins the gather (``process_allgather``); process 0 writes the
file atomically (temporary file + rename): on a shared filesystem, as the
metrics and samples; every process returns once it is written (or raises if
process 0 could not write it). The artefacts kept are the newest ``keep`` steps plus,
for a stage ranked by a metric, the best ``keep`` ones (a superset of the
checkpoints Orbax keeps). ``which``: 'latest', 'best' or a step.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
from typing import Any, Callable

import jax
import numpy as np
from etils import epath
from flax import traverse_util
from jax.experimental import multihost_utils

from deocc_jax.errors import CheckpointNotFoundError, UnreadableCheckpointError
from deocc_jax.utils import files

FORMAT = 1
_NAME = re.compile(r"step_(\d+)\.npz$")
KINDS = ("teacher", "generator", "segmenter", "arcface", "finetuned", "student")


class ArtefactNotFoundError(CheckpointNotFoundError):
  """No artefact of that stage / step (one line naming the directory)."""


class UnreadableArtefactError(UnreadableCheckpointError):
  """An artefact file exists but cannot be read (names the file)."""


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a stage's artefact holds: ``variables(state)`` picks the model's
  variables out of the training state; ``facts`` / ``arrays`` are fixed for
  the stage (the step, metrics and stage name are added at each write)."""

  kind: str
  variables: Callable[[Any], Any]
  facts: dict[str, Any]
  arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    if self.kind not in KINDS:
      raise ValueError(f"artefact kind {self.kind!r} is not one of {KINDS}")
    json.dumps(self.facts)  # fails here, not at the first checkpoint


@dataclasses.dataclass
class Artefact:
  path: str
  step: int
  variables: dict[str, Any]  # nested dicts of numpy arrays
  facts: dict[str, Any]
  arrays: dict[str, np.ndarray]

  @property
  def kind(self) -> str:
    return str(self.facts["kind"])


def directory(workdir: Any, stage: str) -> epath.Path:
  return epath.Path(workdir) / stage / "artefacts"


def file_name(step: int) -> str:
  return f"step_{int(step):07d}.npz"


def steps(workdir: Any, stage: str) -> list[int]:
  d = directory(workdir, stage)
  if not d.is_dir():
    return []
  return sorted(int(m.group(1)) for p in d.iterdir() if (m := _NAME.match(p.name)))


def encode(
    variables: Any, facts: dict[str, Any], arrays: dict[str, np.ndarray] | None = None
) -> bytes:
  """The ``.npz`` bytes of an artefact (numpy leaves; bfloat16 kept as float32
  with its dtype recorded in the facts)."""
  flat = traverse_util.flatten_dict(variables, sep="/") if variables else {}
  out: dict[str, np.ndarray] = {}
  dtypes: dict[str, str] = {}
  for k, v in flat.items():
    a = np.asarray(v)
    if a.dtype.kind == "V" or a.dtype.name == "bfloat16":
      dtypes[k] = a.dtype.name
      a = a.astype(np.float32)
    out[f"variables/{k}"] = a
  for k, v in (arrays or {}).items():
    out[f"arrays/{k}"] = np.asarray(v)
  meta = {**facts, "format": FORMAT, "cast_dtypes": dtypes}
  out["facts"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
  buf = io.BytesIO()
  np.savez(buf, **out)
  return buf.getvalue()


def decode(raw: bytes, path: str = "<bytes>") -> Artefact:
  try:
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
      facts = json.loads(bytes(z["facts"]).decode())
      flat, arrays = {}, {}
      for k in z.files:
        if k.startswith("variables/"):
          flat[k[len("variables/") :]] = z[k]
        elif k.startswith("arrays/"):
          arrays[k[len("arrays/") :]] = z[k]
  except Exception as e:  # truncated, not an npz, no facts
    raise UnreadableArtefactError(
        f"artefact {path} cannot be read ({type(e).__name__}: {e})"
    ) from None
  for k, name in facts.get("cast_dtypes", {}).items():
    flat[k] = flat[k].astype(jax.numpy.dtype(name))
  variables = traverse_util.unflatten_dict(flat, sep="/") if flat else {}
  return Artefact(path, int(facts.get("step", -1)), variables, facts, arrays)


def write(
    workdir: Any,
    stage: str,
    step: int,
    spec: Spec,
    state: Any,
    metrics: dict[str, float] | None = None,
    keep: int = 3,
    best_metric: str | None = None,
    best_mode: str = "min",
) -> epath.Path:
  """Gathers ``spec.variables(state)`` (every process calls this) and writes
  the step's artefact from process 0; prunes older ones (see module doc)."""
  local = multihost_utils.process_allgather(spec.variables(state), tiled=True)
  path = directory(workdir, stage) / file_name(step)
  facts = {
      **spec.facts,
      "kind": spec.kind,
      "stage": stage,
      "step": int(step),
      "metrics": {k: float(v) for k, v in (metrics or {}).items()},
      "best_metric": best_metric or "",
      "best_mode": best_mode,
  }

  def write_and_prune() -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, encode(local, facts, spec.arrays))
    _prune(workdir, stage, keep, best_metric, best_mode)

  # Every process returns only once the file is there: a process that lists
  # or reads the artefacts next (the ablation's curve) sees the same steps.
  files.on_process_0(write_and_prune, f"write the artefact {path}")
  return path


def _metric(facts: dict[str, Any], name: str) -> float | None:
  v = facts.get("metrics", {}).get(name)
  return None if v is None or not math.isfinite(float(v)) else float(v)


def _best_steps(workdir: Any, stage: str, name: str, mode: str, k: int) -> list[int]:
  scored = []
  for s in steps(workdir, stage):
    v = _metric(read_facts(workdir, stage, s), name)
    if v is not None:
      scored.append((v if mode == "min" else -v, -s, s))
  return [s for *_, s in sorted(scored)[:k]]


def _prune(workdir: Any, stage: str, keep: int, best_metric: str | None, best_mode: str) -> None:
  if keep <= 0:
    return
  all_steps = steps(workdir, stage)
  kept = set(all_steps[-keep:])
  if best_metric:
    kept |= set(_best_steps(workdir, stage, best_metric, best_mode, keep))
  for s in all_steps:
    if s not in kept:
      (directory(workdir, stage) / file_name(s)).unlink()


def read_facts(workdir: Any, stage: str, step: int) -> dict[str, Any]:
  """The facts of one step's artefact (reads only that entry of the file)."""
  path = directory(workdir, stage) / file_name(step)
  try:
    with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
      return json.loads(bytes(z["facts"]).decode())
  except Exception as e:
    raise UnreadableArtefactError(
        f"artefact {path} cannot be read ({type(e).__name__}: {e})"
    ) from None


def read_arrays(workdir: Any, stage: str, which: int | str = "latest") -> dict[str, np.ndarray]:
  """The ``arrays/`` entries (mean face, landmarks) of an artefact, alone."""
  step = select(workdir, stage, which)
  path = directory(workdir, stage) / file_name(step)
  with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
    return {k[len("arrays/") :]: z[k] for k in z.files if k.startswith("arrays/")}


def select(workdir: Any, stage: str, which: int | str = "latest") -> int:
  """The step ``which`` ('latest', 'best' or a step) names; clear errors."""
  have = steps(workdir, stage)
  d = directory(workdir, stage)
  if not have:
    raise ArtefactNotFoundError(
        f"stage '{stage}' has no trained artefacts in {d}: run that stage first (list it in "
        "config.stages); for a run trained before artefacts existed, rerunning the stage's "
        "command writes them from its last checkpoint"
    )
  if which == "latest":
    return have[-1]
  if which == "best":
    facts = read_facts(workdir, stage, have[-1])
    name, mode = str(facts.get("best_metric") or ""), str(facts.get("best_mode") or "min")
    if not name:
      raise ArtefactNotFoundError(
          f"no checkpoint 'best' for stage '{stage}': it was not ranked by a metric; set the "
          f"stage's best_metric (e.g. config.{stage}.best_metric) when training"
      )
    best = _best_steps(workdir, stage, name, mode, 1)
    if not best:
      raise ArtefactNotFoundError(f"no artefact of stage '{stage}' in {d} recorded {name!r}")
    return best[0]
  try:
    step = int(which)
  except (TypeError, ValueError):
    raise ValueError(f"artefact {which!r}: use 'latest', 'best' or a step number") from None
  if step not in have:
    raise ArtefactNotFoundError(
        f"no checkpoint {step} of stage '{stage}' in {d} (available steps: {have})"
    )
  return step


def read(workdir: Any, stage: str, which: int | str = "latest") -> Artefact:
  """The artefact of ``stage`` that ``which`` names (numpy arrays)."""
  path = directory(workdir, stage) / file_name(select(workdir, stage, which))
  return decode(path.read_bytes(), str(path))


def has(workdir: Any, stage: str) -> bool:
  return bool(steps(workdir, stage))
