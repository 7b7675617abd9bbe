"""The paper's path rehearsed end to end (issue 10): configs/paper_rehearsal.py
in two jax.distributed CPU processes (4 devices each): miniature CelebA / LFW /
AR in their native formats, a converted VGGFace2 ResNet-50 teacher, every
stage of configs/paper_celeba.py, the tables on LFW and AR."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from deocc_jax.data import real_datasets as rd
from deocc_jax.data import rehearsal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_state_dict_without_torch_fails_clearly(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match="needs torch"):
    rehearsal.vggface2_resnet50_state_dict()


def test_miniature_sets_parse_with_the_real_readers(tmp_path):
  """The written files are read by the same readers a cluster run uses."""
  from deocc_jax.data.synthetic_faces import SyntheticFaces
  faces = SyntheticFaces(40, 6, 178, seed=0)
  rehearsal.write_celeba(str(tmp_path / "celeba"), faces, 0, 12, 2)
  pairs, lfw_lm = rehearsal.write_lfw(str(tmp_path), faces, 12)
  ar_lm = rehearsal.write_ar(str(tmp_path), faces, 33, 3)
  tr = rd.CelebA(str(tmp_path / "celeba"), "all", resolution=64)
  assert len(tr) == 24 and len(set(tr.identity_names)) == 12
  assert tr[0]["image"].shape == (64, 64, 3)
  lfw = rd.LFW(str(tmp_path / "lfw"), pairs, resolution=64, landmarks_file=lfw_lm)
  assert len(lfw.pairs) == 20 and sorted({p.fold for p in lfw.pairs}) == list(range(10))
  assert sum(p.same for p in lfw.pairs) == 10
  ar = rd.ARFace(str(tmp_path / "AR"), "scarf", resolution=64, landmarks_file=ar_lm)
  assert len(ar) == 6 and ar.people == ["m-001", "m-003", "w-002"]
  # The AR scarf images are really occluded below the nose: they differ from
  # the clean face of the same render there.
  img = rd.read_image(ar.paths[0])
  lm = rd.parse_landmarks_file(ar_lm)[os.path.basename(ar.paths[0])]
  y = int(lm[3, 1])
  clean = faces.render(33, 4)["image"]  # index 11 is the 5th AR image of person 0
  off = ((rehearsal.AR_SIZE[0] - 178) // 2, (rehearsal.AR_SIZE[1] - 178) // 2)
  patch = img[y - 5:y + 5, off[0] + 60:off[0] + 118].astype(int)
  ref = clean[y - off[1] - 5:y - off[1] + 5, 60:118].astype(int)
  assert np.abs(patch - ref).mean() > 20


# Not yet in CI (issue 10 open): it has not been seen to finish within CI's budget;
# run it with `pytest -m rehearsal`.
@pytest.mark.slow
@pytest.mark.rehearsal
def test_paper_rehearsal_two_processes(tmp_path):
  import torch  # noqa: F401  (the test extra has torch; the rehearsal needs it)
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  work = tmp_path / "rehearsal"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "deocc_jax.main", "--config=configs/paper_rehearsal.py",
       f"--workdir={work}", "--config.distributed.mode=manual",
       f"--config.distributed.coordinator_address=127.0.0.1:{port}",
       "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
      for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=3600)  # ~15 min on 2 free cores; slack for a busy CI
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, out[-5000:]
    outs.append(out)
  assert all("all stages done" in o for o in outs)
  res = work / "results"
  results = json.loads((res / "results.json").read_text())
  # The evaluation asserted disjoint identities and says so in every title.
  held = results["held_out"]
  assert held["shared"] == 0 and held["identities"] == 20 and held["trained_identities"] > 0
  for name in ("verification_celeba.md", "table2_celeba.md", "identification_celeba.md",
               "verification_lfw.md", "table2_lfw.md", "by_category_lfw_one.md",
               "identification_ar.md", "ablation.md"):
    text = (res / name).read_text()
    assert "Identities:" in text, name
  assert "0 shared with the" in (res / "table2_celeba.md").read_text()
  assert "LFW identities" in (res / "table2_lfw.md").read_text()
  # LFW: Table 2 / Fig. 4 shape: recognisers x inputs, 20 pairs in 10 folds.
  lfw = results["verification"]["lfw"]
  assert lfw["num_pairs"] == 20
  rec = lfw["results"]["mixture"]
  assert {"teacher", "arcface_finetuned", "student_hard", "student_soft"} <= set(rec)
  assert {"masked", "completed", "completed_predicted"} <= set(rec["student_soft"])
  for r in rec.values():
    for kind in r.values():
      assert len(kind["fold_accuracies_one"]) == 10
  t2 = (res / "table2_lfw.md").read_text()
  assert "fine-tuned" in t2 and "student (soft)" in t2
  # AR: Table 1 shape: rank-1 on AR1 (sunglasses) / AR2 (scarf) per recogniser and input.
  ar = results["identification"]["ar"]
  assert set(ar["teacher"]) == {"AR1 sunglasses", "AR2 scarf"}
  for subset in ("AR1 sunglasses", "AR2 scarf"):
    assert 0.0 <= ar["student_soft"][subset]["masked"]["rank1"] <= 1.0
    assert "completed_predicted" in ar["student_soft"][subset]
  assert results["undetected"] == {"lfw": 0, "ar": 0}  # aligned from the landmark files
  # Every stage of paper_celeba ran: checkpoints of the trained ones.
  for stage in ("deocclusion", "segmentation", "distill_hard", "distill_soft",
                "finetune_arcface"):
    assert (work / stage / "checkpoints").is_dir(), stage
