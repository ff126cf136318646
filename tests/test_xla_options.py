"""ssd_jax.xla_options: the CPU compiler options take effect, other backends get none."""

import jax
import jax.numpy as jnp

from ssd_jax import xla_options


def _compiled_text(options):
    conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    args = (jnp.zeros((1, 38, 38, 256)), jnp.zeros((3, 3, 256, 256)))  # big enough for YNNPACK
    return jax.jit(conv, compiler_options=options).lower(*args).compile().as_text()


def test_cpu_options_route_convolutions_to_xla_not_ynnpack():
    options = xla_options.compiler_options("cpu")
    assert options == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert "__ynn_fusion" in _compiled_text(None)  # jaxlib 0.10's default on CPU
    ours = _compiled_text(options)
    assert "__ynn_fusion" not in ours and "convolution(" in ours


def test_other_backends_get_no_options():
    assert xla_options.compiler_options("gpu") is None
    assert xla_options.compiler_options("tpu") is None
