"""Import TensorFlow for the input pipeline, CPU only: accelerators are left to JAX."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

for _kind in ("GPU", "TPU"):
    with contextlib.suppress(RuntimeError, ValueError):  # already initialised, or no such device type
        tf.config.set_visible_devices([], _kind)

__all__ = ["tf"]
