"""The teacher-strength study (studies/teacher_study.py): settings parse with
clear errors; on the tiny run each setting trains its own teacher, fine-tuned
baseline and student on the run's G and writes the paired table."""

import copy
import csv
import shutil

import numpy as np
import pytest

from deocc_jax.errors import ConfigError
from deocc_jax.runs import artefacts as art
from deocc_jax.studies import teacher_study
from deocc_jax.teachers import extract
from tests.helpers import tiny_run as tiny_run_lib  # noqa: E402


def test_settings_are_typed_tuples_and_errors_name_the_key():
  c = tiny_run_lib.tiny_config()
  c.teacher_study.identities, c.teacher_study.images = (0, 2400), (4, 20)
  c.teacher_study.width, c.teacher_study.steps = (0.25, 0.5), (2, 800)
  got = teacher_study.settings(c)
  assert got[1] == {"identities": 2400, "images": 20, "width": 0.5, "steps": 800}
  assert teacher_study.setting_name(got[1]) == "identities=2400,images=20,width=0.5,steps=800"
  bad = copy.deepcopy(c)
  bad.teacher_study.steps = (2,)
  with pytest.raises(ConfigError, match=r"the same number in each .*'steps': 1"):
    teacher_study.settings(bad)
  bad = copy.deepcopy(c)
  bad.teacher_study.images = (4, 2.5)
  with pytest.raises(ConfigError, match=r"config.teacher_study.images\[1\] = 2.5 is not a int"):
    teacher_study.settings(bad)
  empty = copy.deepcopy(c)
  for k in ("identities", "images", "width", "steps"):
    empty.teacher_study[k] = ()
  with pytest.raises(ConfigError, match="one entry per setting"):
    teacher_study.settings(empty)
  s = teacher_study.setting_config(c, got[1])
  assert (s.data.teacher_identities, s.data.teacher_images_per_identity) == (2400, 20)
  assert (s.teacher.width, s.teacher.num_steps, s.teacher.epochs) == (0.5, 800, 0)


@pytest.mark.slow
def test_study_trains_each_setting_and_writes_the_paired_table(tiny_run, tmp_path):
  config, workdir = tiny_run
  work = tmp_path / "run"
  shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("results"))
  c = copy.deepcopy(config)
  c.teacher_study.identities, c.teacher_study.images = (0, 30), (4, 4)
  # both teachers at the tiny run's width: the programs of the tiny run's stages
  # (and of the first setting, where shapes agree) load from the compilation
  # cache instead of compiling again (the widths' own effect: the settings test)
  c.teacher_study.width, c.teacher_study.steps = (0.125, 0.125), (2, 2)
  c.teacher_study.num_pairs = 200
  c.teacher_study.students = ("distill_hard", "distill_soft")
  out = teacher_study.run(c, str(work))["settings"]
  assert [r["identities"] for r in out] == [0, 30]
  centroids = []
  for i, r in enumerate(out):
    sub = work / "teacher_study" / str(i)
    teacher = art.read(sub, "teacher")
    assert teacher.step == 2 and teacher.facts["config"]["width"] == 0.125
    # the pool's identities are the teacher's classes; 0: the training split's
    assert teacher.facts["num_classes"] == (
        30 if i else art.read(workdir, "teacher").facts["num_classes"]
    )
    for stage in ("distill_hard", "distill_soft"):
      assert art.read(sub, stage).facts["teacher"]["embed_dim"] == int(c.teacher.embed_dim)
    assert art.read(sub, "finetune_teacher").step == 4  # the teacher of this setting, fine-tuned
    assert art.read(sub, "finetune_teacher").facts["teacher"]["step"] == 2
    # the soft student's identity centres (Eq. 18): this setting's teacher's
    # embeddings of the students' training identities
    centroids.append(extract.load_teacher_outputs(str(sub / "teacher_embeddings"))["centroids"])
    assert centroids[-1].shape == (
        art.read(workdir, "teacher").facts["num_classes"],
        int(c.teacher.embed_dim),
    )
    names = ("teacher_masked", "teacher_completed", "finetuned", "student_hard", "student_soft")
    for k in names:
      assert 0.0 <= r["results"][k]["accuracy"] <= 1.0 and len(r["folds"][k]) == 10
    for k in ("student_hard", "student_soft"):
      d = r["students_minus_finetuned"][k]
      diffs = [a - b for a, b in zip(r["folds"][k], r["folds"]["finetuned"])]
      assert d["mean"] == pytest.approx(sum(diffs) / 10) and d["positive"] == sum(
          x > 0 for x in diffs
      )
  # different teachers, different centres and students (the settings are not one model)
  assert not np.allclose(centroids[0], centroids[1])
  assert out[0]["folds"]["student_soft"] != out[1]["folds"]["student_soft"]
  with open(work / "results" / "teacher_study.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["teacher (pool identities, images, width, steps)"] for r in rows] == [
      "identities=0,images=4,width=0.125,steps=2",
      "identities=30,images=4,width=0.125,steps=2",
  ]
  assert "student (soft) - teacher fine-tuned (points; folds +)" in rows[0]


def test_study_refuses_unknown_students(tiny_run, tmp_path):
  config, _ = tiny_run
  c = copy.deepcopy(config)
  c.teacher_study.students = ("distill_hard", "distill_medium")
  with pytest.raises(ConfigError, match="teacher_study.students.*distill_medium"):
    teacher_study.run(c, str(tmp_path))
