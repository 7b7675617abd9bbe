"""Tests of deocc_jax.losses."""
