"""Command-line error handling shared by ``main``, ``evaluate`` and ``infer``.

A user error (an unknown or bad config field, a missing config file, a
workdir in use, a missing or unreadable checkpoint, a bad input file) prints
one line ``error: <message>`` on stderr, naming the key / file / step, and
exits with status :data:`EXIT_USER_ERROR` (2); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, NoReturn, Sequence

from absl import app, flags

EXIT_USER_ERROR = 2


def user_errors() -> tuple[type[BaseException], ...]:
  """The exception types reported as one line + exit status 2."""
  from deocc_jax.conversion.mtcnn_weights import MTCNNWeightsError
  from deocc_jax.data.dataset_formats import DatasetFormatError
  from deocc_jax.errors import CheckpointError, ConfigError
  from deocc_jax.runs.workdir import WorkdirError

  return (
      ConfigError,
      WorkdirError,
      CheckpointError,
      FileNotFoundError,
      DatasetFormatError,  # a data file at fault, named
      MTCNNWeightsError,  # no facenet-pytorch / a missing or unreadable converted .npz
      app.UsageError,
  )


def fail(message: Any, hard_exit: bool = False) -> NoReturn:
  """Prints ``error: message`` on one line and exits with status 2.

  ``hard_exit`` leaves without interpreter shutdown (``os._exit``), where
  Orbax / tensorstore's background threads print "Event loop is closed"
  tracebacks after a failed restore; use it only at the top of a process
  (locks are released by their ``finally`` blocks before this point).
  """
  print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
  if hard_exit:
    sys.stdout.flush()
    os._exit(EXIT_USER_ERROR)
  sys.exit(EXIT_USER_ERROR)


def _explain_parse_error(argv: Sequence[str], e: BaseException) -> str:
  raw = str(e)
  if "Error whilst parsing config file" in raw:
    # config_flags embeds get_config's traceback; its last line is the error
    # (e.g. an unknown variant after the colon).
    last = [line.strip() for line in raw.splitlines() if line.strip()][-1]
    flag = re.match(r"(flag --\S+): ", raw)
    return (flag.group(1) + ": " if flag else "") + last
  text = " ".join(raw.split())
  if isinstance(e, (KeyError, AttributeError)):
    found = re.search(r"(\w+)", text)
    hint = re.search(r'Did you mean "(\w+)"', text)
    for arg in argv[1:]:
      m = re.match(r"--(config\.[\w.]+)", arg)
      if found and m and found.group(1) in m.group(1).split("."):
        return f"unknown config field '{m.group(1)}' (from {arg})" + (
            f"; did you mean '{hint.group(1)}'?" if hint else ""
        )
  return text


# absl's help flags (``--help``, ``-?``, ``--helpshort``, ``--helpfull``, ``--helpxml``).
_HELP_ARG = re.compile(r"--?(help|helpshort|helpfull|helpxml|\?)(=(true|t|1|yes|y))?", re.I)


def help_requested(argv: Sequence[str]) -> bool:
  """Whether ``argv`` (program name first) asks for one of absl's help texts."""
  for arg in argv[1:]:
    if arg == "--":
      return False
    if _HELP_ARG.fullmatch(arg):
      return True
  return False


def resolve_config_args(argv: Sequence[str]) -> list[str]:
  """``argv`` with each ``--config`` value passed through
  :func:`deocc_jax.configs.experiments.resolve`: ``configs/NAME.py`` or ``NAME``
  of a packaged experiment loads the packaged file where no such file exists
  (an installed wheel has no ``configs/`` folder); overrides such as
  ``--config.data.resolution=64`` are left alone."""
  from deocc_jax.configs import experiments

  out, i = list(argv[:1]), 1
  while i < len(argv):
    arg = argv[i]
    m = re.fullmatch(r"(--?config)=(.*)", arg, re.S)
    if arg == "--":
      out += argv[i:]
      break
    if m:
      out.append(f"{m.group(1)}={experiments.resolve(m.group(2))}")
    elif arg in ("--config", "-config") and i + 1 < len(argv):
      out += [arg, experiments.resolve(argv[i + 1])]
      i += 1
    else:
      out.append(arg)
    i += 1
  return out


def parse_flags(argv: list[str]) -> list[str]:
  """``app.run``'s ``flags_parser``: a parse error is one line, exit 2; a
  requested help text exits 0 (absl's own help flags exit with status 1)."""
  resolved = resolve_config_args(argv)
  try:
    return flags.FLAGS(resolved)
  except SystemExit as e:
    if e.code == 1 and help_requested(argv):
      sys.exit(0)
    raise
  except Exception as e:  # noqa: BLE001 -- config_flags raises Key/Attribute/Value errors
    message = _explain_parse_error(argv, e)
    for given, used in zip(argv, resolved):  # name the file as the user gave it
      if given != used:
        message = message.replace(used.split("=", 1)[-1], given.split("=", 1)[-1])
    fail(message)


def config_value(holder: Any, name: str = "config") -> Any:
  """The value of a ``config_flags`` flag; a config file that fails to load
  (missing, syntax error) is a one-line user error."""
  try:
    value = holder.value
    if value is not None:
      value.keys()  # a config file that failed to load raises on first use
    return value
  except (OSError, SyntaxError, AttributeError, KeyError, ValueError) as e:
    text = " ".join(str(e).split())
    m = re.search(r"Attempted \[[^\]]*\]: (\S+) \[Errno 2\]", text)
    if m:
      from deocc_jax.configs import experiments

      fail(
          f"--{name}: config file not found: {m.group(1)} (packaged configs: "
          f"{', '.join(experiments.NAMES)}, e.g. --{name}=synthetic)"
      )
    fail(f"--{name}: cannot load the config file ({text})")


def run_or_exit(fn: Callable[[], Any], hard_exit: bool = True) -> Any:
  """Runs ``fn``; user errors become one line and exit status 2 (see
  :func:`fail` for ``hard_exit``; False keeps the caller's process alive for a
  ``SystemExit`` handler)."""
  previous_hook, previous_unraisable = sys.excepthook, sys.unraisablehook
  sys.excepthook = _quiet_closed_loop_hook(previous_hook)
  sys.unraisablehook = _quiet_closed_loop_unraisable(previous_unraisable)
  try:
    return fn()
  except user_errors() as e:
    fail(e, hard_exit=hard_exit)
  finally:
    sys.excepthook, sys.unraisablehook = previous_hook, previous_unraisable


def _quiet_closed_loop_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
  """An excepthook that drops tensorstore's callbacks into Orbax's closed
  asyncio loop after a failed restore ("Event loop is closed", printed from
  its C++ threads), and reports everything else as ``hook`` does."""

  def quiet(kind, value, tb):
    if kind is RuntimeError and str(value) == "Event loop is closed":
      return
    hook(kind, value, tb)

  return quiet


def _quiet_closed_loop_unraisable(hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
  """The same filter for ``sys.unraisablehook``: tensorstore 0.1.86 reports
  those callbacks as unraisable exceptions rather than through excepthook."""

  def quiet(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      return
    hook(unraisable)

  return quiet


def run_console(main: Callable[[list[str]], Any], module: str) -> None:
  """Runs an absl ``main`` as a console command (pyproject [project.scripts]).

  Under a console script ``__main__`` is pip's wrapper, so absl's ``--help``
  would list no flags and no description: the flags of ``module`` (and its
  docstring) are made the main module's, as with ``python -m module``.
  """
  from absl import app, flags

  mod = sys.modules[module]
  for flag in flags.FLAGS.get_key_flags_for_module(module):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  main_module = sys.modules.get("__main__")
  if main_module is not None and not getattr(main_module, "__doc__", None):
    main_module.__doc__ = mod.__doc__
  app.run(main, flags_parser=parse_flags)
