"""The embedded default: synthetic identity faces, sized for a 2-core CPU.

    python -m deocc_jax.main --config=configs/synthetic.py --workdir=DIR

Variants ``:cpu``, ``:ablation``, ``:teacher_study`` (after a colon). The config
itself, its variants and what each changes:
``deocc_jax/configs/experiments/synthetic.py`` (shipped in the package, so an
installed wheel without this folder finds it by this path or as
``--config=synthetic``).
"""

from deocc_jax.configs.experiments.synthetic import VARIANTS, get_config

__all__ = ["VARIANTS", "get_config"]
