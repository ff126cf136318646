"""Training-mode batch normalisation with a closed-form gradient."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ssd_jax.ops.reduce import channel_sum


def _batch_moments(x32):
    """Biased mean and variance of ``x32 [..., C]`` over every axis but the last (float32)."""
    count = x32.size // x32.shape[-1]
    mean = channel_sum(x32) / count
    var = jnp.maximum(channel_sum(x32 * x32) / count - mean * mean, 0.0)
    return mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, epsilon):
    """Training-mode batch normalisation of ``x [..., C]`` over all axes but the last.

    Returns ``(y, mean, var)``: ``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` in
    float32 with the batch's biased ``mean`` and ``var`` ``[C]`` (``var = E[x^2] - E[x]^2``,
    clipped at 0: ``flax.linen.BatchNorm``'s defaults). The gradient is the closed form of
    batch norm's backward pass. Its reductions are :func:`ssd_jax.ops.reduce.channel_sum`:
    in CPU lowerings laid out for XLA:CPU (which turns autodiff's reductions to ``[C]`` into
    slow windowed tree reductions), elsewhere XLA's plain reductions.
    """
    y, mean, var, _ = _batch_norm_train_impl(x, scale, bias, epsilon)
    return y, mean, var


def _batch_norm_train_impl(x, scale, bias, epsilon):
    x32 = x.astype(jnp.float32)
    mean, var = _batch_moments(x32)
    inv = lax.rsqrt(var + epsilon)
    y = (x32 - mean) * (inv * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
    return y, mean, var, inv


def _batch_norm_train_fwd(x, scale, bias, epsilon):
    y, mean, var, inv = _batch_norm_train_impl(x, scale, bias, epsilon)
    return (y, mean, var), (x, scale, bias, mean, inv)


def _batch_norm_train_bwd(epsilon, res, cotangents):
    x, scale, bias, mean, inv = res
    g, g_mean, g_var = cotangents
    count = x.size // x.shape[-1]
    centred = x.astype(jnp.float32) - mean
    xhat = centred * inv
    g = g.astype(jnp.float32)
    g_bias = channel_sum(g)
    g_scale = channel_sum(g * xhat)
    dx = (inv * scale.astype(jnp.float32)) * (g - (g_bias + xhat * g_scale) / count)
    dx = dx + (g_mean + 2.0 * g_var * centred) / count  # through the returned statistics
    return dx.astype(x.dtype), g_scale.astype(scale.dtype), g_bias.astype(bias.dtype)


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)
