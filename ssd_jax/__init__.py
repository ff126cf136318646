"""ssd_jax: SSD (Single Shot MultiBox Detector) in JAX and Flax.

Stages, in data-flow order: ``anchors`` (default boxes), ``boxes`` (IoU, box coding),
``matching``, ``losses``, ``nms``, ``postprocess``, ``models``, ``data``, ``train``,
``evaluation``, ``detect``, ``convert``.
"""

__version__ = "0.1.0"
