"""Tests of deocc_jax.conversion."""
