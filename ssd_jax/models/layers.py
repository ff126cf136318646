"""Building blocks shared by the SSD models: a convolution, L2Norm, pooling helpers.

All layers are NHWC. ``Conv`` is the one convolution every model uses. Padding is always
explicit ``((top, bottom), (left, right))`` (PyTorch/Caffe semantics), never ``"SAME"``,
so that converted weights line up. Two gradients are written by hand because XLA:CPU's
own are slow (same values, see :func:`add_bias` and :func:`max_pool`); the convolutions
themselves are XLA's (compile with :func:`ssd_jax.xla_options.compiler_options` on CPU).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
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


def sum_over_positions(x):
    """Sum of ``x [..., W, C]`` over every axis but the last, accumulated in float32 -> ``[C]``.

    The same number as ``x.sum(axis=tuple(range(x.ndim - 1)))``; summing rows of the
    ``[-1, W*C]`` view first keeps XLA:CPU's reduction vectorised along a wide minor axis
    (6x faster on a ``[4, 300, 300, 64]`` gradient than one reduction to ``[C]``).
    """
    c = x.shape[-1]
    if x.ndim < 3:
        return x.reshape(-1, c).sum(0, dtype=jnp.float32)
    rows = x.reshape(-1, x.shape[-2] * c).sum(0, dtype=jnp.float32)
    return rows.reshape(-1, c).sum(0)


@jax.custom_vjp
def add_bias(y, bias):
    """``y [..., C] + bias [C]``; the bias gradient is :func:`sum_over_positions`."""
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, bias


def _add_bias_bwd(bias, g):
    return g, sum_over_positions(g).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Conv(nn.Module):
    """2-D convolution, NHWC, PyTorch padding semantics (int, ``(ph, pw)`` or explicit pairs).

    Params ``kernel [kh, kw, in / groups, out]`` and ``bias [out]`` (the names and shapes of
    ``flax.linen.Conv``). Default init: Xavier/Glorot uniform kernel, zero bias (as the SSD
    Caffe release). Inputs, kernel and bias are promoted to ``dtype`` (as flax does).
    """

    features: int
    kernel_size: int | tuple = 3
    strides: int | tuple = 1
    padding: Any = 0
    dilation: int | tuple = 1
    groups: int = 1
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable = xavier_uniform

    @nn.compact
    def __call__(self, x):
        pad = self.padding
        if isinstance(pad, int) or (len(pad) == 2 and all(isinstance(p, int) for p in pad)):
            pad = torch_padding(pad)
        kh, kw = _pair(self.kernel_size)
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1] // self.groups, self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = lax.conv_general_dilated(x, kernel, _pair(self.strides), tuple(tuple(p) for p in pad),
                                     rhs_dilation=_pair(self.dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=self.groups)
        return add_bias(y, bias) if self.use_bias else y


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


def _max_pool_padding(hw, window: int, stride: int, padding: int, ceil_mode: bool) -> tuple:
    """``((top, bottom), (left, right))`` of a PyTorch ``MaxPool2d`` (ceil mode pads bottom/right)."""
    pads = []
    for size in hw:
        lo = hi = padding
        if ceil_mode:
            span = size + 2 * padding - window
            out = -(-span // stride) + 1
            if (out - 1) * stride >= size + padding:  # PyTorch: last window must start inside
                out -= 1
            hi = max(hi, (out - 1) * stride + window - size - padding)
        pads.append((lo, hi))
    return tuple(pads)


def max_pool(x, window: int, stride: int, padding: int = 0, ceil_mode: bool = False):
    """PyTorch ``MaxPool2d`` on NHWC (padding counts as -inf; ``ceil_mode`` pads bottom/right).

    The gradient goes to the first maximum of each window in row-major order, as with
    XLA's ``select_and_scatter`` (see :func:`_max_pool_bwd`).
    """
    return _max_pool(x, window, stride, _max_pool_padding(x.shape[1:3], window, stride, padding, ceil_mode))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, stride, pads):
    return lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, (1, window, window, 1),
                             (1, stride, stride, 1), ((0, 0), *pads, (0, 0)))


def _max_pool_fwd(x, window, stride, pads):
    y = _max_pool(x, window, stride, pads)
    return y, (x, y)


def _max_pool_bwd(window, stride, pads, res, g):
    """Gradient as ``window**2`` strided views compared with the output, no scatter.

    XLA:CPU expands the autodiff rule of a max pool (``select_and_scatter``) into index
    bookkeeping and a scatter: 5-7x slower than this on VGG16's pools.
    """
    x, y = res
    n, h, w, c = x.shape
    ho, wo = y.shape[1:3]
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    hp, wp = xp.shape[1:3]
    zero = jnp.zeros((), g.dtype)
    taken = jnp.zeros(y.shape, bool)
    dxp = 0
    for i in range(window):
        for j in range(window):
            view = lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                             (1, stride, stride, 1))
            first = (view == y) & ~taken
            taken = taken | first
            dxp = dxp + lax.pad(jnp.where(first, g, zero), zero,
                                ((0, 0, 0), (i, hp - i - (ho - 1) * stride - 1, stride - 1),
                                 (j, wp - j - (wo - 1) * stride - 1, stride - 1), (0, 0, 0)))
    return (dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a PyTorch-style convolution along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
