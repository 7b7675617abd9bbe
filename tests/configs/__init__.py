"""Tests of deocc_jax.configs."""
