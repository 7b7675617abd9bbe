"""The paper's setting (Li et al., ACM MM 2020, section 3.4 / 4.1).

    python -m deocc_jax.main --config=configs/paper_celeba.py --workdir=runs/paper

Hardware variants ``:gpu8``, ``:tpu_pod`` (after a colon). The config itself,
its variants and what each changes:
``deocc_jax/configs/experiments/paper_celeba.py`` (shipped in the package, so an
installed wheel without this folder finds it by this path or as
``--config=paper_celeba``).
"""

from deocc_jax.configs.experiments.paper_celeba import VARIANTS, get_config

__all__ = ["VARIANTS", "get_config"]
