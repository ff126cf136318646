"""ssd_jax: SSD (Single Shot MultiBox Detector) in JAX and Flax.

Stages, in data-flow order: ``anchors`` (default boxes), ``boxes`` (IoU, box coding),
``matching``, ``losses``, ``nms``, ``postprocess``, ``models``, ``data``, ``train``,
``evaluation``, ``detector`` (with ``images``; CLI ``detect``), ``convert``.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # ssd_jax.Detector without importing JAX / TensorFlow at ``import ssd_jax`` time.
    if name in ("Detector", "ImageDetections"):
        from ssd_jax import detector
        return getattr(detector, name)
    raise AttributeError(f"module 'ssd_jax' has no attribute {name!r}")
