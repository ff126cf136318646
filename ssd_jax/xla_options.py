"""XLA compiler options for SSD networks, per backend.

On CPU, jaxlib 0.10 hands convolutions to YNNPACK by default; XLA's own (Eigen)
convolutions are faster for SSD's layers on x86-64 (VGG16 SSD300, 2-core AVX-512 CPU:
forward 1.2x, training step 2x, mostly from the weight gradients: 16-55 GFLOP/s through
YNNPACK vs 120-270 through Eigen; measured by experiments/benchmarks/bench_models.py).
:func:`compiler_options` turns that default off; every jit of a network in this package
(training, evaluation, ``Detector``) passes it, and so should your own::

    step = jax.jit(train_step, compiler_options=ssd_jax.xla_options.compiler_options())

On other backends it is ``None`` (nothing changed).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}  # "": no op is handed to YNNPACK


@functools.cache
def _cpu_options_supported() -> bool:
    try:
        x = jax.device_put(jnp.zeros(()), jax.local_devices(backend="cpu")[0])
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(x).compile()
        return True
    except Exception as e:  # an XLA without the option: compile with its defaults
        warnings.warn(f"ssd_jax: this jaxlib does not take the XLA:CPU options {CPU_OPTIONS} ({e}); "
                      "compiling with its defaults (CPU convolution gradients may be slower)",
                      stacklevel=1)  # about this jaxlib, not the caller: reported here
        return False


def compiler_options(backend: str | None = None) -> dict | None:
    """The ``compiler_options`` for ``jax.jit`` of SSD networks on ``backend`` (default: JAX's)."""
    if (backend or jax.default_backend()) != "cpu" or not _cpu_options_supported():
        return None
    return dict(CPU_OPTIONS)
