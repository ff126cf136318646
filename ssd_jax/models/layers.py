"""Building blocks shared by the SSD models: a convolution wrapper, L2Norm, pooling helpers.

All layers are NHWC. ``Conv`` is the one convolution every model uses, so a faster
convolution formulation (see :func:`conv_general_dilated`) is switched on for all
models in one place. Padding is always explicit ``((top, bottom), (left, right))``
(PyTorch/Caffe semantics), never ``"SAME"``, so that converted weights line up.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any

xavier_uniform = nn.initializers.xavier_uniform()
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pair(v) -> tuple:
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_padding(padding) -> tuple:
    """PyTorch-style padding (int or ``(ph, pw)``) as ``((ph, ph), (pw, pw))``."""
    ph, pw = _pair(padding)
    return ((ph, ph), (pw, pw))


# XLA:CPU computes convolution weight gradients several times slower than forward
# convolutions (VGG16 layers: 5-10 GFLOP/s); the per-tap matmul formulation below runs
# them 2.5-4x faster and is used when this is True, for convs with at least
# FAST_WEIGHT_GRAD_MIN_CHANNELS input and output channels (below that, XLA's is faster).
FAST_WEIGHT_GRAD = True
FAST_WEIGHT_GRAD_MIN_CHANNELS = 32
_NHWC_HWIO = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def _conv_nhwc(x, w, strides, padding, dilation, precision=None):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)


def conv_weight_grad(x, g, kernel_shape, strides, padding, dilation):
    """Gradient of ``sum(g * conv(x, w))`` w.r.t. ``w`` as one matmul per kernel tap.

    ``x [B, H, W, I]``, ``g [B, Ho, Wo, O]`` -> ``[kh, kw, I, O]``: tap ``(i, j)`` is
    ``x_pad[:, i*dh : : sh, j*dw : : sw]^T @ g`` contracted over batch and positions,
    accumulated in float32.
    """
    kh, kw, cin, cout = kernel_shape
    (sh, sw), (dh, dw) = strides, dilation
    b, ho, wo, _ = g.shape
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    g2 = g.reshape(b * ho * wo, cout)  # 2-D matmuls: XLA:CPU runs them much faster than multi-axis dots
    taps = []
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dh, j * dw
            xs = lax.slice(xp, (0, y0, x0, 0), (b, y0 + (ho - 1) * sh + 1, x0 + (wo - 1) * sw + 1, cin),
                           (1, sh, sw, 1))
            taps.append(jnp.dot(xs.reshape(b * ho * wo, cin).T, g2, preferred_element_type=jnp.float32))
    return jnp.stack(taps).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _fast_conv(x, w, strides, padding, dilation):
    return _conv_nhwc(x, w, strides, padding, dilation)


def _fast_conv_fwd(x, w, strides, padding, dilation):
    return _conv_nhwc(x, w, strides, padding, dilation), (x, w)


def _fast_conv_bwd(strides, padding, dilation, res, g):
    x, w = res
    _, input_vjp = jax.vjp(lambda x_: _conv_nhwc(x_, w, strides, padding, dilation), x)
    (dx,) = input_vjp(g)
    dw = conv_weight_grad(x, g, w.shape, strides, padding, dilation).astype(w.dtype)
    return dx, dw


_fast_conv.defvjp(_fast_conv_fwd, _fast_conv_bwd)


def fast_conv(x, w, strides=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1)):
    """NHWC x HWIO convolution, explicit padding, whose weight gradient is :func:`conv_weight_grad`."""
    return _fast_conv(x, w, tuple(strides), tuple(tuple(p) for p in padding), tuple(dilation))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """The convolution primitive used by :class:`Conv`.

    ``lax.conv_general_dilated``, except that plain NHWC/HWIO convolutions with explicit
    padding and enough channels go through :func:`fast_conv` when ``FAST_WEIGHT_GRAD`` is set.
    """
    simple = (FAST_WEIGHT_GRAD and feature_group_count == 1 and not kwargs and precision is None
              and not isinstance(padding, str) and all(d == 1 for d in (lhs_dilation or (1, 1)))
              and lhs.ndim == 4 and dimension_numbers in (_NHWC_HWIO, ("NHWC", "HWIO", "NHWC"))
              and min(rhs.shape[2], rhs.shape[3]) >= FAST_WEIGHT_GRAD_MIN_CHANNELS)
    if simple:
        return fast_conv(lhs, rhs, window_strides, padding, rhs_dilation or (1, 1))
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision, **kwargs)


def Conv(features: int, kernel_size=3, strides=1, padding=0, dilation=1, groups: int = 1,
         use_bias: bool = True, dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
         kernel_init: Callable = xavier_uniform, name: str | None = None) -> nn.Conv:
    """2-D convolution, NHWC, PyTorch padding semantics (int, ``(ph, pw)`` or explicit pairs).

    Returns a ``flax.linen.Conv`` (params ``kernel [kh, kw, in / groups, out]`` and
    ``bias [out]``) whose primitive is :func:`conv_general_dilated`. Default init:
    Xavier/Glorot uniform kernel, zero bias (as the SSD Caffe release).
    """
    pad = padding
    if isinstance(pad, int) or (len(pad) == 2 and all(isinstance(p, int) for p in pad)):
        pad = torch_padding(pad)
    return nn.Conv(
        features, _pair(kernel_size), strides=_pair(strides), padding=pad,
        kernel_dilation=_pair(dilation), feature_group_count=groups, use_bias=use_bias,
        dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init,
        bias_init=nn.initializers.zeros, conv_general_dilated=conv_general_dilated, name=name)


class L2Norm(nn.Module):
    """L2-normalise each location across channels, times a learnable per-channel ``scale``.

    ``y = scale * x / max(||x||_2, eps)`` (torchvision ``F.normalize``, eps 1e-12;
    ssd.pytorch adds 1e-10 to the norm instead, a difference below float32 resolution for
    any non-zero feature). ``scale`` ``[C]`` is initialised to ``scale_init`` (20 in SSD).
    The norm is computed in float32 whatever the compute dtype.
    """

    scale_init: float = 20.0
    eps: float = 1e-12
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.constant(self.scale_init), (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True))
        y = x32 / jnp.maximum(norm, self.eps) * scale.astype(jnp.float32)
        return y.astype(self.dtype or x.dtype)


def max_pool(x, window: int, stride: int, padding: int = 0, ceil_mode: bool = False):
    """PyTorch ``MaxPool2d`` on NHWC (padding counts as -inf; ``ceil_mode`` pads bottom/right)."""
    pads = []
    for size in x.shape[1:3]:
        lo = hi = padding
        if ceil_mode:
            span = size + 2 * padding - window
            out = -(-span // stride) + 1
            if (out - 1) * stride >= size + padding:  # PyTorch: last window must start inside
                out -= 1
            hi = max(hi, (out - 1) * stride + window - size - padding)
        pads.append((lo, hi))
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=tuple(pads))


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a PyTorch-style convolution along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
