"""Paper-ready outputs: Markdown/CSV tables, ROC/CMC/loss plots, image grids.

Every writer takes a local path or any ``etils.epath`` URI (``gs://...``,
any fsspec scheme), is atomic (locally it writes ``path + ".tmp"`` and then
``os.replace``\\ s it onto ``path``; on object stores the bytes are rendered in
memory and written as one whole object), creates missing parent directories
and returns the path(s) written, as strings. Plots use matplotlib's object
API (``Figure`` + ``FigureCanvasAgg``), so no global pyplot state and no
display are involved.

Tables (:func:`write_table`, :func:`markdown_table`): a cell is a float, an
int, a string, ``None`` (``-`` in Markdown, empty in CSV) or a ``(mean, std)``
tuple (``93.35 ± 0.61`` in Markdown; two CSV columns ``<name>`` and
``<name> std``). CSV floats are written with ``repr`` (shortest string that
round-trips exactly).

Image grids (:func:`image_grid`): ``pad`` white pixels go **between** cells
only, never around the outer border, so ``R`` rows x ``C`` columns of
(H, W) cells give an array of shape
``(R * H + (R - 1) * pad, C * W + (C - 1) * pad, 3)``. Cell conversion:

* uint8 arrays are used as they are;
* float 3-channel images are taken to lie in [-1, 1]:
  ``clip(rint((x + 1) * 127.5), 0, 255)``;
* 1-channel cells, (H, W) or (H, W, 1), are masks shown as gray: float masks
  in [0, 1] become ``clip(rint(m * 255), 0, 255)`` (bool: 0 / 255), copied to
  the three channels.

Non-finite float pixels are drawn as 0 (black).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import IO, Any, Callable, Sequence

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from deocc_jax.runs import workdir as workdir_lib
from deocc_jax.utils import files

_DPI = 120


# --------------------------------------------------------------------------- #
# Atomic writing
# --------------------------------------------------------------------------- #


def _atomic_write(path: Any, write: Callable[[IO[bytes]], None]) -> str:
  """Calls ``write(binary_file)``; the result replaces ``path`` atomically
  (``files.write_atomic``: temporary file + rename locally, one object for
  a URI). Parent folders are created."""
  buf = io.BytesIO()
  write(buf)
  target = workdir_lib.as_path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  files.write_atomic(target, buf.getvalue())
  return os.fspath(path)


def _atomic_write_text(path: Any, text: str) -> str:
  return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_text(text: str, path: Any) -> str:
  """Writes ``text`` (UTF-8) to ``path`` atomically (local path or URI)."""
  return _atomic_write_text(path, text)


def _save_figure(fig: Figure, path: Any) -> str:
  FigureCanvasAgg(fig)
  return _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=_DPI))


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #


def _scalar(v: Any) -> Any:
  """numpy scalars -> Python scalars; everything else unchanged."""
  if isinstance(v, np.generic):
    return v.item()
  return v


def _is_mean_std(v: Any) -> bool:
  return isinstance(v, tuple)


def _check_cell(v: Any, key: str, index: int) -> Any:
  v = _scalar(v)
  if isinstance(v, tuple):
    if len(v) != 2:
      raise ValueError(
          f"row {index}, column {key!r}: a tuple cell must be (mean, std), "
          f"got {len(v)} elements"
      )
    return (float(_scalar(v[0])), float(_scalar(v[1])))
  if v is None or isinstance(v, (bool, int, float, str)):
    return v
  raise TypeError(f"row {index}, column {key!r}: unsupported cell type {type(v).__name__}")


def _cells(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> list[list[Any]]:
  """The table as a list of rows of checked cells (in column order)."""
  out = []
  for i, row in enumerate(rows):
    cells = []
    for key, _ in columns:
      if key not in row:
        raise KeyError(f"row {i} has no key {key!r} (row keys: {sorted(row)})")
      cells.append(_check_cell(row[key], key, i))
    out.append(cells)
  return out


def _md_cell(v: Any, float_format: str) -> str:
  if v is None:
    return "-"
  if isinstance(v, tuple):
    return f"{float_format.format(v[0])} ± {float_format.format(v[1])}"
  if isinstance(v, float):
    return float_format.format(v)
  return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: list[dict[str, Any]], columns: list[tuple[str, str]], float_format: str = "{:.2f}"
) -> str:
  """A Markdown (GFM) table; numeric columns are right-aligned."""
  if not columns:
    raise ValueError("columns is empty")
  cells = _cells(rows, columns)
  header = [name.replace("|", "\\|") for _, name in columns]
  align = []
  for j in range(len(columns)):
    values = [r[j] for r in cells if r[j] is not None]
    numeric = bool(values) and all(
        isinstance(v, (int, float, tuple)) and not isinstance(v, bool) for v in values
    )
    align.append("---:" if numeric else "---")
  lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
  for r in cells:
    lines.append("| " + " | ".join(_md_cell(v, float_format) for v in r) + " |")
  return "\n".join(lines) + "\n"


def _csv_value(v: Any) -> str:
  if v is None:
    return ""
  if isinstance(v, float):
    return repr(v)
  return str(v)


def csv_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
  """The CSV text of :func:`write_table` (tuple columns split into value + std)."""
  cells = _cells(rows, columns)
  split = [any(_is_mean_std(r[j]) for r in cells) for j in range(len(columns))]
  header = []
  for (_, name), s in zip(columns, split):
    header += [name, f"{name} std"] if s else [name]
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(header)
  for r in cells:
    out = []
    for v, s in zip(r, split):
      if not s:
        out.append(_csv_value(v))
      elif isinstance(v, tuple):
        out += [_csv_value(v[0]), _csv_value(v[1])]
      else:  # a plain value (or None) in a mean ± std column: no std
        out += [_csv_value(v), ""]
    w.writerow(out)
  return buf.getvalue()


def write_table(
    rows: list[dict[str, Any]],
    columns: list[tuple[str, str]],
    path_stem: str,
    title: str | None = None,
    float_format: str = "{:.2f}",
) -> tuple[str, str]:
  """Writes ``path_stem.md`` and ``path_stem.csv``; returns (md_path, csv_path).

  ``columns`` is a list of (row key, display name). ``title`` becomes a
  ``# title`` line above the Markdown table.
  """
  md = markdown_table(rows, columns, float_format)
  if title:
    md = f"# {title}\n\n{md}"
  csv_text = csv_table(rows, columns)
  path_stem = os.fspath(path_stem)
  md_path = _atomic_write_text(path_stem + ".md", md)
  csv_path = _atomic_write_text(path_stem + ".csv", csv_text)
  return md_path, csv_path


# --------------------------------------------------------------------------- #
# Curves
# --------------------------------------------------------------------------- #


def plot_roc_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str,
    title: str = "",
    fars_marked: Sequence[float] = (1e-3, 1e-4),
) -> str:
  """ROC curves (TAR against log-scale FAR) as a PNG.

  Each value is (far, tar), far ascending in [0, 1] (e.g. from
  ``verification.roc_curve``). The x axis starts at the smallest positive FAR
  over all curves (1 / num_negatives for an exact ROC), capped at 1e-2 so at
  least two decades show, or 1e-4 when no FAR is positive; smaller FARs, zero included, are clipped to it. Curves are drawn
  as steps (the TAR reached at a FAR holds until the next operating point).
  Dotted vertical lines mark ``fars_marked`` that lie inside the axis.
  """
  if not curves:
    raise ValueError("no curves to plot")
  checked = {}
  for label, value in curves.items():
    if not isinstance(value, (tuple, list)) or len(value) != 2:
      raise ValueError(f"curve {label!r}: expected a (far, tar) pair")
    far = np.asarray(value[0], np.float64)
    tar = np.asarray(value[1], np.float64)
    if far.ndim != 1 or tar.ndim != 1 or far.shape != tar.shape:
      raise ValueError(
          f"curve {label!r}: far and tar must be 1-D arrays of the same shape, "
          f"got {far.shape} and {tar.shape}"
      )
    if far.size == 0:
      raise ValueError(f"curve {label!r}: empty")
    checked[label] = (far, tar)
  positive = [f[(f > 0) & np.isfinite(f)] for f, _ in checked.values()]
  positive = np.concatenate(positive)
  # At least two decades are shown, whatever the smallest positive FAR is.
  x_min = min(float(positive.min()), 1e-2) if positive.size else 1e-4

  fig = Figure(figsize=(6.0, 4.5))
  ax = fig.add_subplot()
  for label, (far, tar) in checked.items():
    ax.plot(np.clip(far, x_min, 1.0), tar, drawstyle="steps-post", label=str(label))
  for f in fars_marked:
    if x_min <= f <= 1.0:
      ax.axvline(f, color="gray", linestyle=":", linewidth=1.0)
      ax.annotate(
          f"FAR={f:g}",
          (f, 0.02),
          xycoords=("data", "axes fraction"),
          rotation=90,
          fontsize=7,
          color="gray",
          ha="right",
          va="bottom",
      )
  ax.set_xscale("log")
  ax.set_xlim(x_min, 1.0)
  ax.set_ylim(0.0, 1.01)
  ax.set_xlabel("False accept rate (FAR)")
  ax.set_ylabel("True accept rate (TAR)")
  ax.grid(True, which="major", alpha=0.3)
  if title:
    ax.set_title(title)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  return _save_figure(fig, path)


def plot_cmc_curves(
    curves: dict[str, np.ndarray], path: str, title: str = "", max_rank: int | None = 20
) -> str:
  """CMC curves (identification rate against rank 1..max_rank) as a PNG.

  ``cmc[k - 1]`` is the accuracy at rank ``k``; ``max_rank=None`` plots all.
  """
  if not curves:
    raise ValueError("no curves to plot")
  if max_rank is not None and max_rank < 1:
    raise ValueError(f"max_rank must be >= 1 or None, got {max_rank}")
  fig = Figure(figsize=(6.0, 4.5))
  ax = fig.add_subplot()
  longest = 1
  for label, cmc in curves.items():
    cmc = np.asarray(cmc, np.float64)
    if cmc.ndim != 1 or cmc.size == 0:
      raise ValueError(f"curve {label!r}: cmc must be a non-empty 1-D array, got {cmc.shape}")
    if max_rank is not None:
      cmc = cmc[:max_rank]
    ranks = np.arange(1, cmc.size + 1)
    longest = max(longest, cmc.size)
    ax.plot(ranks, cmc, marker="o", markersize=3, label=str(label))
  ax.set_xlim(0.5, longest + 0.5)
  ax.set_ylim(0.0, 1.01)
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.set_xlabel("Rank")
  ax.set_ylabel("Identification rate")
  ax.grid(True, alpha=0.3)
  if title:
    ax.set_title(title)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  return _save_figure(fig, path)


def plot_grouped_bars(
    groups: dict[str, dict[str, float]], path: str, title: str = "", ylabel: str = ""
) -> str:
  """Grouped bar chart (the shape of the paper's Fig. 4): one group per outer
  key (e.g. recogniser), one bar per inner key (e.g. input), value labels on top."""
  if not groups:
    raise ValueError("no groups to plot")
  bars: list[str] = []
  for inner in groups.values():
    bars += [k for k in inner if k not in bars]
  fig = Figure(figsize=(max(6.0, 1.2 * len(groups) * max(len(bars), 1) / 3), 4.5))
  ax = fig.add_subplot()
  width = 0.8 / max(len(bars), 1)
  x = np.arange(len(groups))
  finite = [float(v) for inner in groups.values() for v in inner.values() if np.isfinite(float(v))]
  for j, bar in enumerate(bars):
    vals = np.array([float(groups[g].get(bar, np.nan)) for g in groups])
    rects = ax.bar(x + (j - (len(bars) - 1) / 2) * width, np.nan_to_num(vals), width, label=bar)
    for rect, v in zip(rects, vals):
      if np.isfinite(v):
        ax.annotate(
            f"{v:.1f}",
            (rect.get_x() + rect.get_width() / 2, rect.get_height()),
            ha="center",
            va="bottom",
            fontsize=6,
        )
  ax.set_xticks(x)
  ax.set_xticklabels(list(groups), fontsize=8)
  if finite:
    lo, hi = min(finite), max(finite)
    ax.set_ylim(max(0.0, lo - 0.15 * (hi - lo + 1)), hi + 0.1 * (hi - lo + 1))
  ax.set_ylabel(ylabel)
  ax.grid(True, axis="y", alpha=0.3)
  if title:
    ax.set_title(title)
  ax.legend(fontsize=7, ncol=min(len(bars), 3))
  fig.tight_layout()
  return _save_figure(fig, path)


def plot_loss_curves(
    series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: str, title: str = ""
) -> str:
  """One subplot per metric (outer key), one line per run (inner key: (steps, values)).

  Points whose step or value is not finite are skipped.
  """
  if not series:
    raise ValueError("no metrics to plot")
  n = len(series)
  ncols = min(n, 3)
  nrows = math.ceil(n / ncols)
  fig = Figure(figsize=(4.0 * ncols, 3.0 * nrows + (0.4 if title else 0.0)))
  for i, (metric, runs) in enumerate(series.items()):
    ax = fig.add_subplot(nrows, ncols, i + 1)
    plotted = False
    for label, value in runs.items():
      steps = np.asarray(value[0], np.float64)
      values = np.asarray(value[1], np.float64)
      if steps.ndim != 1 or steps.shape != values.shape:
        raise ValueError(
            f"metric {metric!r}, run {label!r}: steps and values must be 1-D "
            f"arrays of the same shape, got {steps.shape} and {values.shape}"
        )
      ok = np.isfinite(steps) & np.isfinite(values)
      if ok.any():
        ax.plot(steps[ok], values[ok], linewidth=1.0, label=str(label))
        plotted = True
    if not plotted:
      ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(str(metric), fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if plotted and len(runs) > 1:
      ax.legend(fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _save_figure(fig, path)


def read_metric_series(
    jsonl_path: str, keys: list[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads a training ``metrics.jsonl``: key -> (steps int64, values float64).

  Lines are taken in file order; a key is read from the lines that have it
  (string values such as "nan" / "inf" are converted with ``float``). Keys
  absent from every line are absent from the result.
  """
  jsonl_path = os.fspath(jsonl_path)
  if not epath.Path(jsonl_path).is_file():
    raise FileNotFoundError(f"metrics file not found: {jsonl_path}")
  steps: dict[str, list[int]] = {k: [] for k in keys}
  values: dict[str, list[float]] = {k: [] for k in keys}
  with epath.Path(jsonl_path).open("r", encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{jsonl_path}:{lineno}: not valid JSON ({e})") from None
      if not isinstance(obj, dict) or "step" not in obj:
        raise ValueError(f"{jsonl_path}:{lineno}: expected an object with a 'step'")
      for k in keys:
        if k in obj:
          v = obj[k]
          steps[k].append(int(obj["step"]))
          values[k].append(math.nan if v is None else float(v))
  return {
      k: (np.asarray(steps[k], np.int64), np.asarray(values[k], np.float64))
      for k in keys
      if steps[k]
  }


# --------------------------------------------------------------------------- #
# Image grids
# --------------------------------------------------------------------------- #


def _to_rgb_uint8(img: np.ndarray, where: str) -> np.ndarray:
  a = np.asarray(img)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3 or a.shape[-1] not in (1, 3):
    raise ValueError(f"{where}: expected (H, W, 3), (H, W, 1) or (H, W), got {a.shape}")
  if a.dtype == np.uint8:
    out = a
  elif a.dtype == np.bool_:
    out = a.astype(np.uint8) * 255
  else:
    x = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    x = x * 255.0 if a.shape[-1] == 1 else (x + 1.0) * 127.5
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
  if out.shape[-1] == 1:
    out = np.repeat(out, 3, axis=-1)
  return out


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
  """Assembles cells into one (H', W', 3) uint8 image; ``pad`` white pixels between cells.

  No padding on the outer border: shape is
  ``(R * H + (R - 1) * pad, C * W + (C - 1) * pad, 3)``. All rows must have
  the same number of cells and all cells the same (H, W).
  """
  if pad < 0:
    raise ValueError(f"pad must be >= 0, got {pad}")
  if not rows or not rows[0]:
    raise ValueError("image_grid needs at least one row with one cell")
  ncols = len(rows[0])
  cells = []
  hw = None
  for r, row in enumerate(rows):
    if len(row) != ncols:
      raise ValueError(f"row {r} has {len(row)} cells, row 0 has {ncols}")
    out_row = []
    for c, img in enumerate(row):
      cell = _to_rgb_uint8(img, f"cell (row {r}, column {c})")
      if hw is None:
        hw = cell.shape[:2]
      elif cell.shape[:2] != hw:
        raise ValueError(
            f"cell (row {r}, column {c}) has shape {np.shape(img)}, "
            f"expected H, W = {hw} (from cell (row 0, column 0))"
        )
      out_row.append(cell)
    cells.append(out_row)
  h, w = hw
  nrows = len(rows)
  grid = np.full((nrows * h + (nrows - 1) * pad, ncols * w + (ncols - 1) * pad, 3), 255, np.uint8)
  for r, row in enumerate(cells):
    for c, cell in enumerate(row):
      y, x = r * (h + pad), c * (w + pad)
      grid[y : y + h, x : x + w] = cell
  return grid


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
  """``text``, shortened with ".." until it fits ``width`` pixels."""
  if draw.textlength(text, font=font) <= width:
    return text
  for n in range(len(text) - 1, 0, -1):
    candidate = text[:n] + ".."
    if draw.textlength(candidate, font=font) <= width:
      return candidate
  return ""


def write_completion_grid(
    columns: dict[str, np.ndarray], path: str, max_rows: int = 8, pad: int = 2
) -> str:
  """PNG of examples side by side: one row per example, one titled column per entry.

  ``columns`` maps title -> batch (N, H, W, C) (or (N, H, W) masks), in
  display order; all batches must have the same N and (H, W). The first
  ``max_rows`` examples are shown; titles (shortened to the column width) are
  drawn in a white strip above the grid.
  """
  if not columns:
    raise ValueError("no columns")
  if max_rows < 1:
    raise ValueError(f"max_rows must be >= 1, got {max_rows}")
  batches = {str(t): np.asarray(b) for t, b in columns.items()}
  for title, b in batches.items():
    if b.ndim not in (3, 4):
      raise ValueError(f"column {title!r}: expected a batch (N, H, W, C), got {b.shape}")
  sizes = {t: b.shape[0] for t, b in batches.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"columns have different batch sizes: {sizes}")
  n = min(next(iter(sizes.values())), max_rows)
  if n == 0:
    raise ValueError("the batches are empty")
  titles = list(batches)
  grid = image_grid([[batches[t][i] for t in titles] for i in range(n)], pad=pad)
  cell_w = (grid.shape[1] - (len(titles) - 1) * pad) // len(titles)

  font = ImageFont.load_default()
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  left, top, right, bottom = probe.textbbox((0, 0), "Ag", font=font)
  strip = int(bottom) + 6
  canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + strip), (255, 255, 255))
  canvas.paste(Image.fromarray(grid), (0, strip))
  draw = ImageDraw.Draw(canvas)
  for c, title in enumerate(titles):
    text = _fit_text(draw, title, font, cell_w)
    x0 = c * (cell_w + pad) + (cell_w - draw.textlength(text, font=font)) / 2
    draw.text((x0, 3), text, fill=(0, 0, 0), font=font)
  return _atomic_write(path, lambda f: canvas.save(f, format="PNG"))


# --------------------------------------------------------------------------- #
# JSON
# --------------------------------------------------------------------------- #


def _json_default(obj: Any) -> Any:
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if hasattr(obj, "__array__"):  # e.g. jax arrays
    return np.asarray(obj).tolist()
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def write_json(obj: Any, path: str) -> str:
  """``json.dump(obj, indent=2)`` atomically; numpy scalars/arrays become Python values."""
  text = json.dumps(obj, indent=2, default=_json_default) + "\n"
  return _atomic_write_text(path, text)
