"""Tests of deocc_jax.models."""
