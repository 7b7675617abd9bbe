"""A trained run: its workdir, artefacts, the models rebuilt from them, and the
config's factories (data sources, masks, mesh). Below training, evaluation,
inference and export; see docs/development.md."""
