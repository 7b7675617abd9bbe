"""Tests of deocc_jax.teachers."""
