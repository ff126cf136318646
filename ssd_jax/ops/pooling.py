"""PyTorch ``MaxPool2d`` on NHWC, with a scatter-free gradient."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ssd_jax.ops.platform import cpu_or_generic
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
    """
    return _max_pool(x, window, stride, max_pool_padding(x.shape[1:3], window, stride, padding, ceil_mode))


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
