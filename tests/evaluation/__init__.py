"""Tests of deocc_jax.evaluation."""
