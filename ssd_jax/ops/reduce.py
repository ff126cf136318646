"""Channel sums, laid out for XLA:CPU in CPU lowerings."""

from __future__ import annotations

import jax.numpy as jnp

from ssd_jax.ops.platform import cpu_or_generic


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


def channel_sum(x):
    """``x [..., C]`` summed over every axis but the last in float32 -> ``[C]``: :func:`sum_over_positions`
    in CPU lowerings, one plain reduction elsewhere. For ``custom_vjp`` rules: differentiating it
    directly would differentiate a conditional (slow to trace)."""
    return cpu_or_generic(x, cpu=sum_over_positions,
                          generic=lambda x: x.sum(axis=tuple(range(x.ndim - 1)), dtype=jnp.float32))
