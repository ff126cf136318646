"""Test set-up: 8 CPU devices for JAX, a persistent compilation cache, TensorFlow off accelerators.

Environment variables (not jax.config calls) so that the subprocesses the command-line tests start
inherit them too. They must be set before JAX initialises its backends, which is why they live here
(conftest is imported before any test module).
"""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# Identical computations (the same tiny model in several tests and subprocesses) compile once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "ssd_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
