"""Tests of deocc_jax.training."""
