"""Tests of deocc_jax.baselines."""
