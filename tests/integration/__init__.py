"""Whole jobs: end-to-end training, the native-format rehearsal, multi-process and multi-host runs."""
