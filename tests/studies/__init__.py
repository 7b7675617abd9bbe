"""Tests of deocc_jax.studies."""
