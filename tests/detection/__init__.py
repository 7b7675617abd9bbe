"""Tests of deocc_jax.detection."""
