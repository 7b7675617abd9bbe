"""deocc-jax: masked face recognition by de-occlusion distillation in JAX/Flax.

Packages: ``data`` (synthetic faces, masks, pipelines, real data sets),
``models`` (generator, contextual attention, critics, student), ``losses``
(reconstruction, adversarial, relational distillation), ``teachers``
(converted / pretrained / trained-here recognisers), ``training``,
``evaluation`` and ``conversion``.
"""

__version__ = "0.1.0"
