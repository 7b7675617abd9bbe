"""Paper outputs: Markdown/CSV tables, ROC/CMC/loss plots, image grids, JSON."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from deocc_jax.evaluation import report

COLUMNS = [("method", "Method"), ("acc", "Accuracy"), ("n", "Pairs"), ("tar", "TAR@1e-3")]
ROWS = [
    {
        "method": "teacher",
        "acc": (93.3512345678901, 0.6123456789012345),
        "n": 6000,
        "tar": 0.8765432101234567,
    },
    {
        "method": "student | distilled",
        "acc": (88.0, 1.25),
        "n": 6000,
        "tar": None,
        "extra": "ignored",
    },
]


def _read(path) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def _no_tmp_files(root) -> bool:
  return not any(name.endswith(".tmp") for _, _, files in os.walk(root) for name in files)


def _assert_png(path: str) -> Image.Image:
  assert os.path.isfile(path) and os.path.getsize(path) > 0
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  img = Image.open(path)
  img.load()
  assert img.format == "PNG"
  assert img.size[0] > 0 and img.size[1] > 0
  return img


# ----------------------------------------------------------------- tables --


def test_markdown_cells():
  md = report.markdown_table(ROWS, COLUMNS)
  lines = md.strip().split("\n")
  assert lines[0] == "| Method | Accuracy | Pairs | TAR@1e-3 |"
  assert lines[1] == "| --- | ---: | ---: | ---: |"
  assert lines[2] == "| teacher | 93.35 ± 0.61 | 6000 | 0.88 |"
  assert lines[3] == "| student \\| distilled | 88.00 ± 1.25 | 6000 | - |"
  assert len(lines) == 4
  assert "| 93.351 ± 0.612 |" in report.markdown_table(ROWS, COLUMNS, "{:.3f}")


def test_write_table_md_and_csv(tmp_path):
  stem = str(tmp_path / "sub" / "dir" / "table1")
  md_path, csv_path = report.write_table(ROWS, COLUMNS, stem, title="LFW verification")
  assert (md_path, csv_path) == (stem + ".md", stem + ".csv")
  md = _read(md_path)
  assert md.startswith("# LFW verification\n\n| Method |")
  assert md.endswith(report.markdown_table(ROWS, COLUMNS))

  with open(csv_path, newline="", encoding="utf-8") as f:
    table = list(csv.reader(f))
  assert table[0] == ["Method", "Accuracy", "Accuracy std", "Pairs", "TAR@1e-3"]
  assert len(table) == 3
  for row, line in zip(ROWS, table[1:]):
    assert line[0] == row["method"]
    mean, std = row["acc"]
    assert abs(float(line[1]) - mean) <= 1e-12 and abs(float(line[2]) - std) <= 1e-12
    assert int(line[3]) == row["n"]
    if row["tar"] is None:
      assert line[4] == ""
    else:
      assert abs(float(line[4]) - row["tar"]) <= 1e-12
  # Full precision: the written floats round-trip exactly.
  assert float(table[1][1]) == 93.3512345678901
  assert _no_tmp_files(tmp_path)


def test_write_table_numpy_scalars_and_plain_value_in_std_column(tmp_path):
  rows = [{"a": (np.float32(0.5), np.float64(0.25))}, {"a": np.float64(0.125)}, {"a": None}]
  md_path, csv_path = report.write_table(rows, [("a", "A")], str(tmp_path / "t"))
  assert "| 0.50 ± 0.25 |" in _read(md_path)
  with open(csv_path, newline="") as f:
    table = list(csv.reader(f))
  assert table == [["A", "A std"], ["0.5", "0.25"], ["0.125", ""], ["", ""]]


def test_write_table_missing_key(tmp_path):
  rows = [{"method": "a", "acc": 1.0, "n": 1, "tar": 0.5}, {"method": "b", "n": 2, "tar": 0.5}]
  with pytest.raises(KeyError) as e:
    report.write_table(rows, COLUMNS, str(tmp_path / "t"))
  assert "'acc'" in str(e.value) and "row 1" in str(e.value)
  assert not os.listdir(tmp_path)


# ------------------------------------------------------------------ plots --


def test_plot_roc_curves(tmp_path):
  far = np.array([0.0, 0.0, 1e-4, 1e-3, 0.01, 0.1, 1.0])
  tar = np.array([0.0, 0.5, 0.6, 0.8, 0.9, 0.97, 1.0])
  far0 = np.array([0.0, 0.0, 0.0, 1.0])  # all but the last FAR zero
  tar0 = np.array([0.0, 0.3, 0.9, 1.0])
  path = str(tmp_path / "plots" / "roc.png")
  out = report.plot_roc_curves({"teacher": (far, tar), "student": (far0, tar0)}, path, title="ROC")
  assert out == path
  img = _assert_png(path)
  assert img.size == (720, 540)  # 6 x 4.5 inches at dpi 120
  assert _no_tmp_files(tmp_path)
  # Only zero FARs: must not break the log axis either.
  report.plot_roc_curves(
      {"zeros": (np.zeros(3), np.array([0.1, 0.5, 1.0]))}, str(tmp_path / "roc0.png")
  )
  _assert_png(str(tmp_path / "roc0.png"))


@pytest.mark.parametrize(
    "far,tar",
    [
        (np.zeros(4), np.zeros(5)),
        (np.zeros((2, 2)), np.zeros((2, 2))),
    ],
)
def test_plot_roc_curves_bad_shapes(tmp_path, far, tar):
  good = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
  with pytest.raises(ValueError, match="broken-curve"):
    report.plot_roc_curves({"ok": good, "broken-curve": (far, tar)}, str(tmp_path / "r.png"))
  assert not os.path.exists(tmp_path / "r.png")


def test_plot_cmc_curves(tmp_path):
  cmc_a = np.linspace(0.6, 1.0, 30)
  cmc_b = np.array([0.3, 0.5, 0.7])
  path = report.plot_cmc_curves({"a": cmc_a, "b": cmc_b}, str(tmp_path / "cmc.png"), title="CMC")
  _assert_png(path)
  _assert_png(report.plot_cmc_curves({"a": cmc_a}, str(tmp_path / "all.png"), max_rank=None))
  with pytest.raises(ValueError, match="bad"):
    report.plot_cmc_curves({"bad": np.zeros((2, 3))}, str(tmp_path / "x.png"))


def test_plot_loss_curves(tmp_path):
  steps = np.arange(0, 500, 50)
  values = np.linspace(7.0, 1.0, 10)
  values[3] = np.nan
  values[5] = np.inf
  series = {
      "loss/total": {"run-a": (steps, values), "run-b": (steps, values * 0.5)},
      "loss/ce": {"run-a": (steps, values)},
      "train/accuracy": {"run-a": (steps, np.full(10, np.nan))},  # nothing finite
      "grad_norm/student": {"run-a": (steps, np.ones(10))},
  }
  path = report.plot_loss_curves(series, str(tmp_path / "loss.png"), title="training")
  img = _assert_png(path)
  assert img.size == (3 * 480, int(round((2 * 3.0 + 0.4) * 120)))  # 3 x 2 subplots
  assert _no_tmp_files(tmp_path)


# ---------------------------------------------------------- metric series --


def test_read_metric_series(tmp_path):
  p = tmp_path / "metrics.jsonl"
  lines = [
      {"step": 50, "loss/total": 7.07, "loss/ce": 6.62, "train/accuracy": 0.0},
      {"step": 100, "loss/total": "nan", "train/accuracy": 0.125},
      {"step": 150, "loss/total": 5.5, "loss/ce": "inf", "train/accuracy": 0.25},
  ]
  p.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
  out = report.read_metric_series(str(p), ["loss/total", "loss/ce", "missing/key"])
  assert set(out) == {"loss/total", "loss/ce"}
  s, v = out["loss/total"]
  assert s.dtype == np.int64 and v.dtype == np.float64
  np.testing.assert_array_equal(s, [50, 100, 150])
  np.testing.assert_array_equal(v, [7.07, np.nan, 5.5])  # NaN positions compared as equal
  assert math.isnan(v[1])
  s, v = out["loss/ce"]
  np.testing.assert_array_equal(s, [50, 150])
  np.testing.assert_array_equal(v, [6.62, np.inf])


def test_read_metric_series_missing_file(tmp_path):
  missing = str(tmp_path / "nope" / "metrics.jsonl")
  with pytest.raises(FileNotFoundError, match="nope"):
    report.read_metric_series(missing, ["loss/total"])


# ------------------------------------------------------------ image grids --


def test_image_grid_shape_values_and_mask():
  rng = np.random.default_rng(0)
  h, w, pad = 5, 7, 3
  imgs = [rng.uniform(-1.2, 1.2, (h, w, 3)).astype(np.float32) for _ in range(4)]
  mask = rng.uniform(0, 1, (h, w, 1))
  mask2d = rng.uniform(0, 1, (h, w)) > 0.5
  u8 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  rows = [[imgs[0], mask, u8], [imgs[1], mask2d, imgs[2]]]
  grid = report.image_grid(rows, pad=pad)
  assert grid.dtype == np.uint8
  assert grid.shape == (2 * h + 1 * pad, 3 * w + 2 * pad, 3)

  def cell(r, c):
    return grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w]

  expected = np.clip(np.rint((imgs[0].astype(np.float64) + 1) * 127.5), 0, 255)
  np.testing.assert_array_equal(cell(0, 0), expected.astype(np.uint8))
  assert cell(0, 0).min() == 0 and cell(0, 0).max() == 255  # clipped out-of-range values
  gray = np.clip(np.rint(mask[..., 0] * 255), 0, 255).astype(np.uint8)
  for ch in range(3):
    np.testing.assert_array_equal(cell(0, 1)[..., ch], gray)
    np.testing.assert_array_equal(cell(1, 1)[..., ch], mask2d.astype(np.uint8) * 255)
  np.testing.assert_array_equal(cell(0, 2), u8)
  # Padding is white and only between cells.
  assert (grid[h : h + pad] == 255).all()
  assert (grid[:, w : w + pad] == 255).all()
  assert (grid[:, 2 * w + pad : 2 * w + 2 * pad] == 255).all()
  # No outer border: the corners are image pixels.
  np.testing.assert_array_equal(grid[0, 0], cell(0, 0)[0, 0])
  np.testing.assert_array_equal(grid[-1, -1], cell(1, 2)[-1, -1])


def test_image_grid_zero_pad_and_errors():
  a = np.zeros((4, 4, 3), np.float32)
  assert report.image_grid([[a, a]], pad=0).shape == (4, 8, 3)
  with pytest.raises(ValueError) as e:
    report.image_grid([[a, a], [a, np.zeros((4, 5, 3), np.float32)]])
  assert "row 1, column 1" in str(e.value) and "(4, 5, 3)" in str(e.value)
  with pytest.raises(ValueError, match="row 1"):
    report.image_grid([[a, a], [a]])
  with pytest.raises(ValueError):
    report.image_grid([[np.zeros((4, 4, 2))]])


def test_write_completion_grid(tmp_path):
  rng = np.random.default_rng(1)
  n, h, w = 6, 16, 16
  cols = {
      "masked": rng.uniform(-1, 1, (n, h, w, 3)).astype(np.float32),
      "mask": (rng.uniform(0, 1, (n, h, w, 1)) > 0.5).astype(np.float32),
      "a very long column title": rng.uniform(-1, 1, (n, h, w, 3)).astype(np.float32),
  }
  p2 = report.write_completion_grid(cols, str(tmp_path / "g" / "two.png"), max_rows=2, pad=2)
  p6 = report.write_completion_grid(cols, str(tmp_path / "g" / "six.png"), max_rows=8, pad=2)
  img2, img6 = _assert_png(p2), _assert_png(p6)
  assert img2.size[0] == img6.size[0] == 3 * w + 2 * 2
  assert img6.size[1] - img2.size[1] == 4 * (h + 2)  # rows 3..6 (max_rows capped at N)
  assert _no_tmp_files(tmp_path)
  # The bottom of the picture is exactly the image grid of the shown rows.
  arr = np.asarray(img2.convert("RGB"))
  grid = report.image_grid([[cols[k][i] for k in cols] for i in range(2)], pad=2)
  np.testing.assert_array_equal(arr[-grid.shape[0] :], grid)
  # The title strip has dark text pixels.
  assert (arr[: -grid.shape[0]] < 128).any()

  bad = dict(cols, other=np.zeros((n - 1, h, w, 3), np.float32))
  with pytest.raises(ValueError, match="batch sizes"):
    report.write_completion_grid(bad, str(tmp_path / "bad.png"))
  assert not os.path.exists(tmp_path / "bad.png")


# ------------------------------------------------------------------- json --


def test_write_json(tmp_path):
  obj = {
      "acc": np.float32(0.5),
      "n": np.int64(3),
      "cmc": np.array([0.25, 1.0]),
      "nested": [{"flag": np.bool_(True)}],
      "name": "x",
  }
  path = report.write_json(obj, str(tmp_path / "a" / "r.json"))
  text = _read(path)
  assert json.loads(text) == {
      "acc": 0.5,
      "n": 3,
      "cmc": [0.25, 1.0],
      "nested": [{"flag": True}],
      "name": "x",
  }
  assert '\n  "acc": 0.5' in text  # indent=2
  assert _no_tmp_files(tmp_path)
  with pytest.raises(TypeError):
    report.write_json({"x": object()}, str(tmp_path / "bad.json"))
  assert not os.path.exists(tmp_path / "bad.json") and _no_tmp_files(tmp_path)


def test_grouped_bars_png(tmp_path):
  from PIL import Image

  path = report.plot_grouped_bars(
      {"teacher": {"masked": 83.4, "G": 92.0}, "student": {"G": 93.3}},
      str(tmp_path / "bars.png"),
      title="t",
      ylabel="acc",
  )
  with Image.open(path) as im:
    assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
  with pytest.raises(ValueError, match="no groups"):
    report.plot_grouped_bars({}, str(tmp_path / "x.png"))
