"""Import TensorFlow for the input pipeline, CPU only: accelerators are left to JAX."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

for _kind in ("GPU", "TPU"):
    try:
        tf.config.set_visible_devices([], _kind)
    except (RuntimeError, ValueError):  # already initialised, or no such device type
        pass

__all__ = ["tf"]
