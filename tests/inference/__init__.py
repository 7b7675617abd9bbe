"""Tests of deocc_jax.inference."""
