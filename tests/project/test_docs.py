"""The user documentation is well-formed and names things that exist.

README.md, BENCHMARKS.md and every page under docs/: code fences are closed,
relative links and #anchors resolve, Python snippets parse and import names
that exist, shell commands name modules, console scripts, config files,
variants and ``--config.*`` fields that exist, and the README stays a
user's README (short, no ticket numbers, no commit hashes).
"""

from __future__ import annotations

import ast
import builtins
import glob
import importlib
import importlib.util
import os
import re
import tomllib

import pytest
from tests.helpers import paths

ROOT = str(paths.ROOT)
PAGES = sorted(
    [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "BENCHMARKS.md")]
    + glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
)
FENCE = re.compile(r"^```(\w*)\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _rel(path: str) -> str:
  return os.path.relpath(path, ROOT)


def _blocks(text: str, strict: bool = True) -> list[tuple[str, str, int]]:
  """(language, body, first line) of every fenced block; an unclosed one
  raises (``strict``) or ends the list (test_fences_are_closed reports it)."""
  out, lang, body, start = [], None, [], 0
  for i, line in enumerate(text.split("\n"), 1):
    m = FENCE.match(line)
    if lang is None and m:
      lang, body, start = m.group(1), [], i
    elif lang is not None and line.strip() == "```":
      out.append((lang, "\n".join(body), start))
      lang = None
    elif lang is not None:
      body.append(line)
  if lang is not None and strict:
    raise AssertionError(f"code fence opened at line {start} is never closed")
  return out


def _prose(text: str) -> str:
  """The text outside fenced blocks (links and headings live there)."""
  keep, inside = [], False
  for line in text.split("\n"):
    if line.startswith("```"):
      inside = not inside
      continue
    keep.append("" if inside else line)
  return "\n".join(keep)


def _slug(heading: str) -> str:
  """GitHub's anchor for a heading."""
  s = re.sub(r"[`*_]", "", heading.strip().lower())
  s = re.sub(r"[^\w\- ]", "", s)
  return s.replace(" ", "-")


def _anchors(path: str) -> set[str]:
  text = _prose(open(path).read())
  return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_fences_are_closed(page):
  _blocks(open(page).read())


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_and_anchors_resolve(page):
  text = _prose(open(page).read())
  bad = []
  for m in LINK.finditer(text):
    target = m.group(1) or m.group(2)
    if re.match(r"[a-z]+:", target):
      continue  # an external address
    path, _, anchor = target.partition("#")
    dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    if not os.path.exists(dest):
      bad.append(f"{target}: no such file")
    elif anchor and (not dest.endswith(".md") or anchor not in _anchors(dest)):
      bad.append(f"{target}: no heading with anchor #{anchor} in {_rel(dest)}")
  assert not bad, f"{_rel(page)}: " + "; ".join(bad)


def _python_blocks():
  for page in PAGES:
    for lang, body, line in _blocks(open(page).read(), strict=False):
      if lang == "python":
        yield pytest.param(body, id=f"{_rel(page)}:{line}")


@pytest.mark.parametrize("snippet", list(_python_blocks()))
def test_python_snippets_parse_and_import_what_exists(snippet):
  tree = ast.parse(snippet)
  defined = set(dir(builtins))
  for node in ast.walk(tree):
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
      defined.add(node.id)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      defined.update((a.asname or a.name).split(".")[0] for a in node.names)
    elif isinstance(node, ast.arg):
      defined.add(node.arg)
    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      defined.add(node.name)
  used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
  assert not used - defined, f"names used but never defined: {sorted(used - defined)}"
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deocc_jax"):
      mod = importlib.import_module(node.module)
      for alias in node.names:
        assert hasattr(mod, alias.name) or importlib.util.find_spec(
            f"{node.module}.{alias.name}"
        ), f"{node.module} has no {alias.name}"
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("deocc_jax"):
          assert importlib.util.find_spec(alias.name), alias.name


def _commands():
  for page in PAGES:
    for lang, body, line in _blocks(open(page).read(), strict=False):
      if lang in ("bash", "sh", ""):
        text = re.sub(r"\\\n\s*", " ", body)
        for cmd in text.split("\n"):
          if "deocc" in cmd:
            yield pytest.param(cmd, id=f"{_rel(page)}:{line}:{cmd[:40]}")


_SCRIPTS = set(tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]["scripts"])


@pytest.mark.parametrize("cmd", list(_commands()))
def test_commands_name_modules_scripts_configs_and_fields_that_exist(cmd):
  for mod in re.findall(r"python3? -m (deocc_jax[\w.]*)", cmd):
    assert importlib.util.find_spec(mod), f"no module {mod}"
  for script in re.findall(r"(?:^|[\s;&])(deocc-[\w-]+)", cmd):
    assert script in _SCRIPTS, f"{script} is not a console script of pyproject.toml"
  m = re.search(r"--config=(configs/[\w./]+\.py)(?::([\w,]+))?", cmd)
  if not m:
    return
  path = os.path.join(ROOT, m.group(1))
  assert os.path.isfile(path), f"no config file {m.group(1)}"
  spec = importlib.util.spec_from_file_location("_doc_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(m.group(2)) if m.group(2) else module.get_config()
  for field in re.findall(r"--config\.([\w.]+)=", cmd):
    node = config
    for part in field.split("."):
      assert part in node, f"--config.{field}: no field {part!r} in {m.group(1)}"
      node = node[part]


def test_readme_is_a_users_readme():
  text = open(os.path.join(ROOT, "README.md")).read()
  assert len(text.split("\n")) <= 350
  prose = _prose(text)
  assert not re.search(
      r"\b[Ii]ssues? \d+|#\d+\b", prose
  ), "ticket numbers belong in docs/experiments/"
  assert not re.search(
      r"\bcommit [0-9a-f]{7,}\b|\b[0-9a-f]{7}\b(?=[),;: ])", prose
  ), "commit hashes"
