"""Strided views of a padded NHWC map, one per window offset (pooling windows, convolution taps)."""

from __future__ import annotations

from jax import lax


def window_views(xp, window_hw, strides, out_hw):
    """``(a, b, view)`` per window offset: the ``[N, *out_hw, C]`` strided view of the padded
    ``xp [N, Hp, Wp, C]`` that offset ``(a, b)`` of every window reads (row-major order)."""
    n, c = xp.shape[0], xp.shape[-1]
    for a in range(window_hw[0]):
        for b in range(window_hw[1]):
            end = (n, a + (out_hw[0] - 1) * strides[0] + 1, b + (out_hw[1] - 1) * strides[1] + 1, c)
            yield a, b, lax.slice(xp, (0, a, b, 0), end, (1, *strides, 1))
