"""Layers shared by the SSD models: convolution, batch norm, L2Norm, conv-BN-activation.

All layers are NHWC. ``Conv`` is the one convolution and ``BatchNorm`` the one batch norm
every model uses; their kernels are in :mod:`ssd_jax.ops` (``Conv`` -> :func:`ops.conv.conv2d`
and :func:`ops.conv.add_bias`, ``BatchNorm`` in training mode -> :func:`ops.batch_norm.batch_norm_train`).
Padding is always explicit ``((top, bottom), (left, right))`` (PyTorch/Caffe semantics),
never ``"SAME"``, so that converted weights line up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

from ssd_jax.ops.batch_norm import batch_norm_train
from ssd_jax.ops.conv import add_bias, conv2d

Dtype = Any

xavier_uniform = nn.initializers.xavier_uniform()


def _pair(v) -> tuple:
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_padding(padding) -> tuple:
    """PyTorch-style padding (int or ``(ph, pw)``) as ``((ph, ph), (pw, pw))``."""
    ph, pw = _pair(padding)
    return ((ph, ph), (pw, pw))


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
        strides, dilation, pad = _pair(self.strides), _pair(self.dilation), tuple(tuple(p) for p in pad)
        y = conv2d(x, kernel, strides, pad, dilation, self.groups)
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


class BatchNorm(nn.Module):
    """``flax.linen.BatchNorm`` over the channel (last) axis, with a closed-form gradient.

    Same variables (params ``scale``, ``bias``; ``batch_stats`` ``mean``, ``var``), the same
    numbers (float32 statistics, fast biased variance, running averages
    ``momentum * old + (1 - momentum) * batch``, not updated at init) and the same output
    dtype; training mode goes through :func:`batch_norm_train`. Under a global-view
    ``jax.jit`` with a sharded batch the statistics are over the global batch.
    """

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None):
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        shape = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), shape)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), shape)
        scale = self.param("scale", nn.initializers.ones, shape, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, shape, self.param_dtype)
        out_dtype = self.dtype or jnp.result_type(x, scale, bias)
        if use_running_average:
            y = (x.astype(jnp.float32) - ra_mean.value) * (lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
        else:
            y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.astype(out_dtype)


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a PyTorch-style convolution along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_bn_act(x, features: int, kernel_size=3, *, train: bool, name: str, strides=1, padding=0, groups: int = 1,
                batch_norm: bool = True, bn_name: str | None = None, momentum: float = 0.9, epsilon: float = 1e-5,
                act: Callable | None = nn.relu, dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32):
    """``act(BatchNorm(Conv(x)))`` inside the calling module's ``nn.compact`` method.

    Submodules: ``Conv`` named ``name`` (no bias when ``batch_norm``, since BatchNorm's bias
    replaces it) and, with ``batch_norm``, ``BatchNorm`` named ``bn_name`` (default
    ``name + "_bn"``) in training mode when ``train``; without ``batch_norm``, conv (with
    bias) + ``act``. ``act=None``: no activation.
    ``x [N, H, W, C]`` -> ``[N, Ho, Wo, features]``.
    """
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    x = Conv(features, kernel_size, strides=strides, padding=padding, groups=groups, use_bias=not batch_norm,
             name=name, **kw)(x)
    if batch_norm:
        x = BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                      name=bn_name or name + "_bn", **kw)(x)
    return act(x) if act is not None else x
