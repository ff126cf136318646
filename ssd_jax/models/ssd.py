"""The generic SSD network: base network -> extra layers -> multibox heads.

``SSD(base, extras, spec, num_classes)`` is a Flax Linen module. ``base`` maps an image
batch ``[B, H, W, 3]`` (RGB, normalised as :func:`ssd_jax.models.input_normalization`
says) to a list of source feature maps; ``extras`` (optional) maps the last base output
to further source maps; ``heads`` puts one box-offset and one class-logit predictor on
each source map. Params tree::

    params["base"]    base network (frozen by ssd_jax.optim.trainable_params_mask)
    params["extras"]  extra feature layers
    params["heads"]   loc_0 .. loc_{m-1}, conf_0 .. conf_{m-1}

Outputs ``loc [B, A, 4]`` (offsets ``(cx, cy, w, h)``, variances applied by the decoder)
and ``logits [B, A, C]`` (class 0 = background), both float32, in the order of
:func:`ssd_jax.anchors.default_boxes`: map by map, location row-major, box within
location — head outputs of a map are reshaped ``[H, W, k, 4]`` / ``[H, W, k, C]``, i.e.
output channel ``b * 4 + j`` is offset ``j`` of box ``b`` (Caffe/torchvision layout, so
converted head weights need no permutation).

The module checks at init/apply time (shapes are static) that the input size equals
``spec.image_size`` and the source maps equal ``spec.feature_map_sizes``, so the number
of predictions equals ``spec.num_boxes``; otherwise it raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ssd_jax.anchors import DefaultBoxSpec
from ssd_jax.models.layers import Conv, Dtype, conv_bn_act


class SeparableHead(nn.Module):
    """SSDLite predictor: 3x3 depthwise conv + BatchNorm + ReLU6, then 1x1 conv (with bias)."""

    features: int
    bn_momentum: float = 0.97
    bn_epsilon: float = 1e-3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        x = conv_bn_act(x, c, 3, padding=1, groups=c, name="depthwise", bn_name="bn", momentum=self.bn_momentum,
                        epsilon=self.bn_epsilon, act=nn.relu6, train=train, dtype=self.dtype,
                        param_dtype=self.param_dtype)
        return Conv(self.features, 1, dtype=self.dtype, param_dtype=self.param_dtype, name="pointwise")(x)


HEAD_TYPES = ("conv", "separable")


class MultiBoxHeads(nn.Module):
    """Box-offset (``loc_i``) and class-logit (``conf_i``) predictors on every source map."""

    boxes_per_location: Sequence[int]
    num_classes: int
    head_type: str = "conv"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence, train: bool = False):
        def head(features, name):
            if self.head_type == "conv":  # SSD: one 3x3 pad-1 conv
                return Conv(features, 3, padding=1, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
            sep = SeparableHead(features, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
            return lambda x: sep(x, train)

        locs, logits = [], []
        for i, (x, k) in enumerate(zip(features, self.boxes_per_location)):
            b, h, w, _ = x.shape
            loc = head(k * 4, f"loc_{i}")(x)
            conf = head(k * self.num_classes, f"conf_{i}")(x)
            locs.append(loc.reshape(b, h * w * k, 4))
            logits.append(conf.reshape(b, h * w * k, self.num_classes))
        loc = jnp.concatenate(locs, axis=1).astype(jnp.float32)
        logits = jnp.concatenate(logits, axis=1).astype(jnp.float32)
        return loc, logits


class SSD(nn.Module):
    """Single Shot MultiBox Detector (see module docstring).

    Attributes:
      base: module ``(images, train) -> list of source maps``; its params live under "base".
      extras: module ``(last_base_map, train) -> list of source maps`` or ``None``.
      spec: the default-box grid the outputs correspond to.
      num_classes: ``C``, including background (class 0).
      head_type: "conv" (SSD) or "separable" (SSDLite).
      sources: indices of the base + extras maps that predict (ascending), ``None`` = all; heads
        exist only for these (``loc_i`` / ``conf_i`` numbered among them), and ``spec`` describes
        them (``config.anchors.sources``, the paper's Table 3).
    """

    base: nn.Module
    extras: nn.Module | None
    spec: DefaultBoxSpec
    num_classes: int
    head_type: str = "conv"
    sources: tuple | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        if self.num_classes < 2:
            raise ValueError(f"SSD.num_classes must be >= 2 (background + objects), got {self.num_classes}")
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"SSD.head_type must be one of {HEAD_TYPES}, got {self.head_type!r}")
        self.heads = MultiBoxHeads(self.spec.boxes_per_location, self.num_classes, self.head_type,
                                   dtype=self.dtype, param_dtype=self.param_dtype)

    def __call__(self, images, train: bool = False):
        """``images [B, H, W, 3]`` -> ``(loc [B, A, 4], logits [B, A, C])`` float32."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"SSD expects images [B, H, W, 3], got shape {images.shape}")
        if tuple(images.shape[1:3]) != tuple(self.spec.image_size):
            raise ValueError(
                f"SSD input is {images.shape[1]}x{images.shape[2]} but its DefaultBoxSpec is for "
                f"{self.spec.image_size[0]}x{self.spec.image_size[1]}; create the model with "
                f"image_size=({images.shape[1]}, {images.shape[2]}) if it supports that size")
        x = images.astype(self.dtype) if self.dtype is not None else images
        sources = list(self.base(x, train=train))
        if self.extras is not None:
            sources += list(self.extras(sources[-1], train=train))
        if self.sources is not None:
            sources = [sources[i] for i in self.sources]
        sizes = tuple(tuple(s.shape[1:3]) for s in sources)
        if sizes != tuple(self.spec.feature_map_sizes):
            raise ValueError(
                f"SSD source maps are {sizes} but the DefaultBoxSpec expects {self.spec.feature_map_sizes} "
                f"(the heads would give {sum(h * w * k for (h, w), k in zip(sizes, self.spec.boxes_per_location))} "
                f"boxes for the spec's {self.spec.num_boxes}); the model and spec do not match")
        return self.heads(sources, train=train)
