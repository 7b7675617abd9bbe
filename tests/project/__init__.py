"""The repository as a whole: docs, packaging, formatting, import rules, benchmarks' scripts."""
