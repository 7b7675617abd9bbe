"""Tests of deocc_jax.data."""
