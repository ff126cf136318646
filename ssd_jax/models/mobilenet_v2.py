"""MobileNetV2 base and SSDLite extras (torchvision ``ssdlite320_mobilenet_v2`` layout).

Base (params["base"]): MobileNetV2 (width 1.0) with BatchNorm (eps 1e-3, torchvision
momentum 0.03 = Flax momentum 0.97) and ReLU6: ``stem`` 3x3 s2 32 ch, inverted-residual
blocks ``block_0 .. block_16`` ((t, c, n, s) = (1,16,1,1), (6,24,2,2), (6,32,3,2),
(6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1)), ``last`` 1x1 1280 ch. Each block has
``expand`` (1x1, absent when t = 1), ``depthwise`` (3x3), ``project`` (1x1, no act), each
a ``{conv, bn}`` pair; residual when stride 1 and channels match.
Sources (as torchvision ssdlite): the expansion output of block_13 (the first stride-2
block of the 160-ch stage, 576 ch at stride 16: 20x20 at 320 px) and the 1280-ch output
at stride 32 (10x10).

Extras (params["extras"], torchvision ``_extra_block``): four blocks 1x1 (out / 2) ->
3x3 depthwise s2 p1 -> 1x1 out, each conv + BN + ReLU6, out = 512, 256, 256, 128;
maps 5, 3, 2, 1. Heads: SSDLite separable heads (3x3 depthwise + BN + ReLU6, 1x1 conv).

torchvision correspondence: base/stem = backbone.features.0.0.{0,1}; base/block_i =
the inverted residual ``features.(i + 1)`` (block_13 split across features.0.14 /
features.1.0 in torchvision's two-stage wrapper); base/last = features.1.-1;
extras/block_j_{reduce,depthwise,expand} = backbone.extra.j.{0,1,2}; heads/{loc,conf}_i/{depthwise,bn,pointwise}
= head.{regression,classification}_head.module_list.i.{0.0, 0.1, 1}.

Deviations from torchvision: initialisation is Xavier uniform for all convs (torchvision:
He normal base, normal(0, 0.03) heads); normalisation "imagenet" (torchvision's ssdlite
feeds (x - 0.5) / 0.5).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ssd_jax.models.layers import Dtype, conv_bn_act

# (expansion t, channels c, repeats n, first stride s)
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                         (6, 160, 3, 2), (6, 320, 1, 1))
SOURCE_BLOCK = 13  # the expansion of this block is the stride-16 source
BN_MOMENTUM = 0.97
BN_EPS = 1e-3


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm + optional ReLU6; params ``conv``, ``bn``."""

    features: int
    kernel_size: int = 1
    strides: int = 1
    groups: int = 1
    act: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        return conv_bn_act(x, self.features, self.kernel_size, strides=self.strides,
                           padding=(self.kernel_size - 1) // 2, groups=self.groups, name="conv", bn_name="bn",
                           momentum=BN_MOMENTUM, epsilon=BN_EPS, act=nn.relu6 if self.act else None, train=train,
                           dtype=self.dtype, param_dtype=self.param_dtype)


class InvertedResidual(nn.Module):
    """MobileNetV2 block; returns ``(output, expansion output or None)``."""

    features: int
    strides: int
    expansion: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cin = x.shape[-1]
        hidden = cin * self.expansion
        y = x
        expanded = None
        if self.expansion != 1:
            y = expanded = ConvBN(hidden, 1, name="expand", **kw)(y, train)
        y = ConvBN(hidden, 3, self.strides, groups=hidden, name="depthwise", **kw)(y, train)
        y = ConvBN(self.features, 1, act=False, name="project", **kw)(y, train)
        if self.strides == 1 and cin == self.features:
            y = x + y
        return y, expanded


class MobileNetV2Base(nn.Module):
    """``images -> [block_13 expansion (stride 16), last 1280-ch map (stride 32)]``."""

    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = ConvBN(32, 3, 2, name="stem", **kw)(x, train)
        sources = []
        i = 0
        for t, c, n, s in MOBILENET_V2_SETTINGS:
            for r in range(n):
                x, expanded = InvertedResidual(c, s if r == 0 else 1, t, name=f"block_{i}", **kw)(x, train)
                if i == SOURCE_BLOCK:
                    sources.append(expanded)
                i += 1
        sources.append(ConvBN(1280, 1, name="last", **kw)(x, train))
        return sources


class SSDLiteExtras(nn.Module):
    """Four blocks 1x1 (out/2) -> 3x3 depthwise s2 -> 1x1 out, BN + ReLU6 after each."""

    channels: tuple = (512, 256, 256, 128)
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        outs = []
        for j, out in enumerate(self.channels):
            mid = out // 2
            x = ConvBN(mid, 1, name=f"block_{j}_reduce", **kw)(x, train)
            x = ConvBN(mid, 3, 2, groups=mid, name=f"block_{j}_depthwise", **kw)(x, train)
            x = ConvBN(out, 1, name=f"block_{j}_expand", **kw)(x, train)
            outs.append(x)
        return outs
