"""Test set-up: 8 CPU devices for JAX, and TensorFlow kept off accelerators and quiet.

The XLA flag must be set before JAX initialises its backends, which is why it lives here
(conftest is imported before any test module).
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
