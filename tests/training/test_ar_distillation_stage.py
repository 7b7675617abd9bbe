"""Stage 'distill_ar' (paper Sec. 4.1, Table 1's OUR row): a trained student
distilled further on AR's own occluded photos, the teacher shown an unoccluded
face of the same subject; AR's rank-1 probes are the photos it never saw."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from deocc_jax.data import rehearsal
from deocc_jax.data.synthetic_faces import SyntheticFaces
from deocc_jax.errors import ConfigError
from deocc_jax.evaluation import streaming
from deocc_jax.runs import artefacts as art
from deocc_jax.training import ar_distillation_stage as stage
from deocc_jax.training.stage_spec import train_stage


@pytest.fixture(scope="module")
def ar_run(tiny_run, tmp_path_factory):
  """A copy of the tiny run with a miniature AR in its native naming (3 people:
  images 1 and 14 unoccluded, 8 / 21 sunglasses, 11 / 24 scarf), and the pass
  run on it for 2 steps (the one compilation of its step in this module)."""
  config, workdir = tiny_run
  root = tmp_path_factory.mktemp("ar_run")
  work = str(root / "run")
  shutil.copytree(workdir, work)
  faces = SyntheticFaces(8, 6, 178, seed=3)
  lm = rehearsal.write_ar(str(root), faces, 0, 3)
  c = config.copy_and_resolve_references()
  c.evaluate.ar_root = str(root / "AR")
  c.evaluate.ar_landmarks = lm
  c.distill_ar.update(num_steps=2, batch_size=8, log_every=1, checkpoint_every=2)
  train_stage(c, work, stage.DISTILL_AR)
  return c, work


def _flat(tree):
  return {k: np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_the_pass_starts_from_the_student_and_trains_on_session_one(ar_run):
  c, work = ar_run
  a = art.read(work, "distill_ar")
  start = art.read(work, "distill_soft")
  assert a.kind == "student" and a.step == 2 and a.facts["init"] == "distill_soft"
  ar = a.facts["ar"]
  assert ar["train_images"] == [8, 9, 10, 11, 12, 13] and ar["teacher_images"] == list(range(1, 8))
  # the miniature holds 8 and 11 of session 1 (occluded) and 1 (unoccluded) per person
  assert (ar["train_faces"], ar["teacher_faces"], ar["people"]) == (
      6,
      3,
      ["m-001", "m-003", "w-002"],
  )
  assert a.facts["config"]["use_ce"] is False  # AR's people are not the student's classes
  got, want = _flat(a.variables["params"]), _flat(start.variables["params"])
  assert set(got) < set(want)  # the student without its L_CE head
  # 2 small steps from the soft student: every kernel near where it started
  # (a fresh initialisation is nowhere near), and some moved
  other = _flat(art.read(work, "distill_hard").variables["params"])
  moved = far = 0.0
  for k, v in got.items():
    if v.ndim == 4:
      scale = np.abs(want[k]).mean()
      moved = max(moved, np.abs(v - want[k]).mean() / scale)
      far = max(far, np.abs(other[k] - want[k]).mean() / scale)
  assert 0 < moved < 0.05 < far, (moved, far)
  losses = open(os.path.join(work, "distill_ar", "logs", "metrics.jsonl")).read().splitlines()
  assert len(losses) == 2 and all('"loss/instance"' in l and '"loss/angle"' in l for l in losses)
  assert all(json.loads(l)["loss/ce"] == 0.0 for l in losses)  # no L_CE term


def test_the_probes_are_the_images_the_pass_never_saw(ar_run):
  c, work = ar_run
  trained = art.read(work, "distill_ar").facts["ar"]["train_images"]
  ids = streaming.ar_identification_set(
      str(c.evaluate.ar_root), 32, str(c.evaluate.ar_landmarks), exclude=trained
  )
  names = {os.path.basename(p) for v in ids.probes.values() for p in v.faces.source.paths}
  assert names and {n[-6:-4] for n in names} == {"21", "24"}
  every = streaming.ar_identification_set(
      str(c.evaluate.ar_root), 32, str(c.evaluate.ar_landmarks)
  )  # without the pass: both sessions
  names = {os.path.basename(p) for v in every.probes.values() for p in v.faces.source.paths}
  assert {n[-6:-4] for n in names} == {"08", "11", "21", "24"}


def test_missing_ar_folder_or_start_is_named(ar_run, tmp_path):
  c, work = ar_run
  bad = c.copy_and_resolve_references()
  bad.evaluate.ar_root = ""
  with pytest.raises(ConfigError, match="set config.evaluate.ar_root"):
    train_stage(bad, work, stage.DISTILL_AR)
  bad = c.copy_and_resolve_references()
  bad.distill_ar.init = "distill_hard"
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  with pytest.raises(ConfigError, match="starts from stage 'distill_hard'"):
    train_stage(bad, empty, stage.DISTILL_AR)
  bad.distill_ar.init = "teacher"
  with pytest.raises(ConfigError, match="distill_ar.init must be one of"):
    train_stage(bad, work, stage.DISTILL_AR)


def test_the_ar_table_names_the_split_and_the_zero_shot_rows(ar_run):
  """What evaluation reads of the pass: the images it trained on (its artefact),
  the probes left, and the rows' names on AR."""
  import types

  from deocc_jax.evaluation import job
  from deocc_jax.evaluation.evaluators import identification as identification_eval

  c, work = ar_run
  step = art.read(work, "distill_ar").step
  models = types.SimpleNamespace(recognizers={"student_ar": None}, steps={"distill_ar": step})
  p = job._ar_pass(work, models)
  assert p["train_images"] == [8, 9, 10, 11, 12, 13] and p["probe_images"] == list(range(21, 27))
  assert job._ranges(p["probe_images"]) == "21-26" and job._ranges([1, 2, 5, 7, 8]) == "1-2, 5, 7-8"
  assert job._ar_pass(work, types.SimpleNamespace(recognizers={"student_soft": None})) == {}
  shown = types.SimpleNamespace(display=lambda r: {"student_soft": "student (soft)"}.get(r, r))
  ids = types.SimpleNamespace(distilled_on_set="student_ar")
  assert (
      identification_eval._identification_name(shown, "student_soft", ids)
      == "student (soft), zero-shot"
  )
  assert identification_eval._identification_name(shown, "student_ar", ids) == "student_ar"
  assert identification_eval._identification_name(shown, "teacher", ids) == "teacher"
  ids.distilled_on_set = ""
  assert identification_eval._identification_name(shown, "student_soft", ids) == "student (soft)"
