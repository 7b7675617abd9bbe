"""Rehearsal of the paper's path before renting a cluster (minutes on a CPU).

    python -m deocc_jax.main --config=configs/paper_rehearsal.py --workdir=DIR

No variants. The config itself and what each field changes:
``deocc_jax/configs/experiments/paper_rehearsal.py`` (shipped in the package, so
an installed wheel without this folder finds it by this path or as
``--config=paper_rehearsal``).
"""

from deocc_jax.configs.experiments.paper_rehearsal import get_config

__all__ = ["get_config"]
