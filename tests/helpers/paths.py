"""Where things are: the repository root and the tests' folders."""

import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]
ROOT = TESTS.parent  # the repository root
HELPERS = TESTS / "helpers"
