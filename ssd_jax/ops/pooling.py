"""PyTorch ``MaxPool2d`` on NHWC, with a scatter-free gradient."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ssd_jax.ops.platform import converting, cpu_or_generic
from ssd_jax.ops.windows import window_views


def max_pool_padding(hw, window: int, stride: int, padding: int, ceil_mode: bool) -> tuple:
    """``((top, bottom), (left, right))`` of a PyTorch ``MaxPool2d`` on an ``hw`` map (ceil mode pads bottom/right)."""
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
    """PyTorch ``MaxPool2d`` on ``x [N, H, W, C]`` (padding counts as -inf; ``ceil_mode`` pads bottom/right).

    Ties: the gradient goes to the first maximum of each window in row-major order: XLA's
    ``select_and_scatter`` (autodiff's rule), in CPU lowerings :func:`_max_pool_grad_cpu`.
    Inside :func:`ssd_jax.ops.platform.for_converters` (ONNX export) it is
    :func:`max_pool_by_slices` instead: the same values, no ``reduce_window``.
    """
    if converting():
        return max_pool_by_slices(x, window, stride, max_pool_padding(x.shape[1:3], window, stride, padding,
                                                                      ceil_mode))
    return _max_pool(x, window, stride, max_pool_padding(x.shape[1:3], window, stride, padding, ceil_mode))


def max_pool_by_slices(x, window: int, stride: int, pads: tuple):
    """``reduce_window`` max of ``x [N, H, W, C]`` as maxima of strided slices, rows then columns.

    ``pads``: ``((top, bottom), (left, right))`` of a PyTorch max pool (:func:`max_pool_padding`).
    Exactly the values of :func:`_reduce_window_max` (a max is exact), in ops every graph
    converter takes: jax2onnx turns an NHWC ``reduce_window`` into an ONNX ``MaxPool`` with a
    4-D ``kernel_shape`` ``[1, k, k, 1]``, which onnxruntime refuses ("Unsupported pooling
    size"), and cannot convert ``lax.pad`` with a symbolic batch. So the border is padded by
    repeating the edge row / column (a concatenation) instead of -inf: the same maxima,
    because every window of a PyTorch pool holds a real element next to the padding it covers
    (padding <= window / 2, and in ceil mode the last window starts inside the input), and
    that element's edge copy cannot exceed the window's max. Slicing one axis at a time keeps
    the batch symbolic. ``2 * window`` slices; no gradient rule of its own (inference graphs).
    """
    for axis, (lo, hi) in zip((1, 2), pads):
        size = x.shape[axis]
        if lo or hi:
            first, last = lax.slice_in_dim(x, 0, 1, axis=axis), lax.slice_in_dim(x, size - 1, size, axis=axis)
            x = jnp.concatenate([first] * lo + [x] + [last] * hi, axis=axis)
        out = (x.shape[axis] - window) // stride + 1
        views = [lax.slice_in_dim(x, a, a + (out - 1) * stride + 1, stride, axis) for a in range(window)]
        x = functools.reduce(jnp.maximum, views)
    return x


def _reduce_window_max(x, window, stride, pads):
    # A concrete (NumPy) -inf makes this XLA's differentiable max pool, whose gradient is select_and_scatter.
    return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, (1, window, window, 1),
                             (1, stride, stride, 1), ((0, 0), *pads, (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, stride, pads):
    return _reduce_window_max(x, window, stride, pads)


def _max_pool_fwd(x, window, stride, pads):
    y = _reduce_window_max(x, window, stride, pads)
    return y, (x, y)


def _max_pool_bwd(window, stride, pads, res, g):
    x, y = res
    xla_grad = lambda g, x, y: jax.vjp(lambda x: _reduce_window_max(x, window, stride, pads), x)[1](g)[0]
    return (cpu_or_generic(g, x, y, cpu=lambda g, x, y: _max_pool_grad_cpu(g, x, y, window, stride, pads),
                           generic=xla_grad),)


def _max_pool_grad_cpu(g, x, y, window, stride, pads):
    """Gradient as ``window**2`` strided views compared with the output, no scatter.

    XLA:CPU expands the autodiff rule of a max pool (``select_and_scatter``) into index
    bookkeeping and a scatter: 5-7x slower than this on VGG16's pools.
    """
    h, w = x.shape[1:3]
    ho, wo = y.shape[1:3]
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    hp, wp = xp.shape[1:3]
    zero = jnp.zeros((), g.dtype)
    taken = jnp.zeros(y.shape, bool)
    dxp = 0
    for i, j, view in window_views(xp, (window, window), (stride, stride), (ho, wo)):
        first = (view == y) & ~taken
        taken = taken | first
        dxp = dxp + lax.pad(jnp.where(first, g, zero), zero,
                            ((0, 0, 0), (i, hp - i - (ho - 1) * stride - 1, stride - 1),
                             (j, wp - j - (wo - 1) * stride - 1, stride - 1), (0, 0, 0)))
    return dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w]


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
