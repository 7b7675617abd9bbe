"""Tests of deocc_jax.runs."""
