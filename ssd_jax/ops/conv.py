"""2-D convolution (NHWC/HWIO) and bias addition, with the CPU formulations chosen per layer.

:func:`conv2d` is ``lax.conv_general_dilated`` with explicit padding. Lowered for the CPU
(:mod:`ssd_jax.ops.platform`) it runs float32 3x3 stride-1 pad-1 layers with at least
``WINOGRAD_MIN_CHANNELS`` input and output channels by Winograd F(4x4, 3x3)
(:mod:`ssd_jax.ops.winograd`; about 1e-5 relative rounding difference), the input gradient of
other strided layers by :func:`strided_conv_input_grad` and depthwise layers by
:func:`depthwise_conv`, and :func:`add_bias`'s gradient by
:func:`ssd_jax.ops.reduce.sum_over_positions`: XLA:CPU's own are slow (same values up to float
rounding). Other convolutions, and every convolution lowered for another platform, are XLA's
(compile with :func:`ssd_jax.xla_options.compiler_options` on CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ssd_jax.ops import winograd
from ssd_jax.ops.platform import cpu_or_generic, cpu_or_generic_vjp
from ssd_jax.ops.reduce import channel_sum, sum_over_positions
from ssd_jax.ops.windows import window_views

NHWC = ("NHWC", "HWIO", "NHWC")
WINOGRAD_MIN_CHANNELS = 256  # CPU 3x3 convs with at least this many in and out channels use winograd.conv3x3


def conv2d(x, kernel, strides: tuple, padding: tuple, dilation: tuple = (1, 1), groups: int = 1):
    """``x [N, H, W, C_in]`` convolved with ``kernel [kh, kw, C_in / groups, C_out]`` -> ``[N, Ho, Wo, C_out]``.

    ``strides``, ``dilation``: ``(h, w)``; ``padding``: explicit ``((top, bottom), (left, right))``.
    The numbers of ``lax.conv_general_dilated`` (Winograd: up to about 1e-5 of their scale);
    the CPU lowering takes the layer's CPU formulation where it has one (module docstring).
    """
    def xla_conv(x, kernel):
        return lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                        dimension_numbers=NHWC, feature_group_count=groups)

    if (kernel.shape[:2] == (3, 3) and strides == dilation == (1, 1) and padding == ((1, 1), (1, 1))
            and groups == 1 and min(x.shape[-1], kernel.shape[-1]) >= WINOGRAD_MIN_CHANNELS
            and x.dtype == jnp.float32):
        return cpu_or_generic_vjp(x, kernel, cpu=winograd.conv3x3, generic=xla_conv)
    if dilation == (1, 1) and groups == 1 and max(strides) > 1:
        return strided_conv(x, kernel, strides, padding)
    if dilation == (1, 1) and groups == x.shape[-1] == kernel.shape[-1]:
        return cpu_or_generic_vjp(x, kernel, cpu=lambda x, k: depthwise_conv(x, k, strides, padding),
                                  generic=xla_conv)
    return xla_conv(x, kernel)


@jax.custom_vjp
def add_bias(y, bias):
    """``y [..., C] + bias [C]``; the bias gradient is :func:`ssd_jax.ops.reduce.channel_sum`
    (:func:`sum_over_positions` in CPU lowerings, autodiff's reduction elsewhere)."""
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, bias


def _add_bias_bwd(bias, g):
    return g, channel_sum(g).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def strided_conv(x, kernel, strides, padding):
    """``lax.conv_general_dilated`` NHWC/HWIO with ``strides`` and explicit ``padding``.

    The same numbers; in CPU lowerings the input gradient is :func:`strided_conv_input_grad`
    (XLA:CPU's inserts ``stride - 1`` zeros between gradient rows and columns and convolves
    over them: a 2x2 stride wastes 3/4 of the work), elsewhere XLA's (GPU libraries have a
    native strided input gradient). The kernel gradient is XLA's.
    """
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC)


def _strided_conv_fwd(x, kernel, strides, padding):
    return strided_conv(x, kernel, strides, padding), (x, kernel)


def _strided_conv_bwd(strides, padding, res, g):
    x, kernel = res
    _, kernel_vjp = jax.vjp(lambda k: lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=NHWC), kernel)

    def xla_input_grad(g, x, kernel):
        return jax.vjp(lambda x: lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC),
                       x)[1](g)[0]

    input_grad = cpu_or_generic(
        g, x, kernel, cpu=lambda g, x, kernel: strided_conv_input_grad(g, kernel, x.shape[1:3], strides, padding),
        generic=xla_input_grad)
    return input_grad, kernel_vjp(g)[0]


strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


def strided_conv_input_grad(g, kernel, in_hw, strides, padding):
    """Input gradient of :func:`strided_conv`: ``g [N, Ho, Wo, O]``, ``kernel [kh, kw, I, O]``
    -> ``[N, *in_hw, I]``, as one stride-1 convolution per phase of the input grid.

    Input row ``i`` gets ``sum_m g[q - m] kernel[r + s m]`` with ``i + pad_lo = s q + r``, so
    the rows of one residue ``r`` are a stride-1 correlation of ``g`` with the flipped taps
    ``r, r + s, ...`` (none when ``r >= k``: those rows get zeros); the phases are then
    interleaved. Same for columns.
    """
    n, ho, wo, _ = g.shape
    ci = kernel.shape[2]
    (sh, sw), (pad_h, pad_w) = strides, (padding[0][0], padding[1][0])
    nq = (-(-(pad_h + in_hw[0]) // sh), -(-(pad_w + in_hw[1]) // sw))  # phase rows/cols covering the input
    rows = []
    for rh in range(sh):
        cols = []
        for rw in range(sw):
            taps = kernel[rh::sh, rw::sw]
            if taps.shape[0] == 0 or taps.shape[1] == 0:
                cols.append(jnp.zeros((n, *nq, ci), g.dtype))
                continue
            flipped = jnp.transpose(taps[::-1, ::-1], (0, 1, 3, 2))
            pads = ((taps.shape[0] - 1, max(0, nq[0] - ho)), (taps.shape[1] - 1, max(0, nq[1] - wo)))
            cols.append(lax.conv_general_dilated(g, flipped, (1, 1), pads, dimension_numbers=NHWC)[:, :nq[0], :nq[1]])
        rows.append(jnp.stack(cols, axis=3))  # [N, nq_h, nq_w, sw, I]
    grid = jnp.stack(rows, axis=2).reshape(n, nq[0] * sh, nq[1] * sw, ci)
    return grid[:, pad_h:pad_h + in_hw[0], pad_w:pad_w + in_hw[1]]


def _depthwise_taps(x, kernel_hw, strides, padding, out_hw):
    """``(a, b, view)`` per kernel tap: the strided view of the zero-padded ``x`` that tap reads."""
    return window_views(jnp.pad(x, ((0, 0), *padding, (0, 0))), kernel_hw, strides, out_hw)


def _depthwise_sum(x, kernel, strides, padding):
    out_hw = tuple((x.shape[1 + i] + sum(padding[i]) - kernel.shape[i]) // strides[i] + 1 for i in range(2))
    y = sum(view.astype(jnp.float32) * kernel[a, b, 0].astype(jnp.float32)
            for a, b, view in _depthwise_taps(x, kernel.shape[:2], strides, padding, out_hw))
    return y.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv(x, kernel, strides, padding):
    """Depthwise convolution, ``x [N, H, W, C]``, ``kernel [kh, kw, 1, C]`` (one filter per channel).

    The same numbers as ``lax.conv_general_dilated(..., feature_group_count=C)``, computed as
    a sum over taps of strided views of ``x`` times that tap's per-channel weights: one fused
    elementwise loop. XLA:CPU runs a grouped convolution as a generic loop (20x slower on
    MobileNetV2's layers) and expands its gradients into dense convolutions. The kernel
    gradient reduces each tap with :func:`sum_over_positions`. :func:`conv2d` uses it in CPU
    lowerings only.
    """
    return _depthwise_sum(x, kernel, strides, padding)


def _depthwise_conv_fwd(x, kernel, strides, padding):
    return _depthwise_sum(x, kernel, strides, padding), (x, kernel)


def _depthwise_conv_bwd(strides, padding, res, g):
    x, kernel = res
    _, x_vjp = jax.vjp(lambda x: _depthwise_sum(x, kernel, strides, padding), x)
    g32 = g.astype(jnp.float32)
    taps = [sum_over_positions(view.astype(jnp.float32) * g32)
            for _, _, view in _depthwise_taps(x, kernel.shape[:2], strides, padding, g.shape[1:3])]
    return x_vjp(g)[0], jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_conv_fwd, _depthwise_conv_bwd)
