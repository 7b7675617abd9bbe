"""Test helpers: fixtures' builders, reference models, multi-process workers (import as tests.helpers.<module>)."""
