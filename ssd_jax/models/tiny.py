"""``ssd_tiny``: a small SSD for CPU training (160 px default input; 0.70 M params with 2
classes, 1.22 M with 21).

Base (params["base"]), each conv 3x3 pad 1, no bias, + BatchNorm + ReLU:
``conv1`` 16 s2, ``conv2`` 32 s2, ``conv3`` 64 s2 + ``conv3b`` 64 s1 (source 1, stride 8),
``conv4`` 128 s2 + ``conv4b`` 128 s1 (source 2, stride 16). The stride-1 convs widen the
receptive field of the two sources (31 and 79 px instead of 15 and 31) to cover the objects
their default boxes are matched to (>= 0.2 of the image): on shapes this took VOC07
mAP@0.5 from 0.859 to 0.914 for 7-12% more time per step (the training step alone / the
whole 1500-step run).
Extras (params["extras"]): three blocks ``conv{5,6,7}_1`` 1x1 64 ->
``conv{5,6,7}_2`` 3x3 128, stride 2 pad 1, except that an axis of length 3 entering the
last block uses stride 1 pad 0 (so 3 -> 1). At 160 px the maps are 20, 10, 5, 3, 1; at
128 px 16, 8, 4, 2, 1; any (height, width) works (:func:`tiny_feature_map_sizes`).

Default boxes (:func:`tiny_spec`): the paper's formula (``anchors.paper_spec``) with
s_min 0.2, s_max 0.9 over the maps, aspect ratios {2} on the first and last map and
{2, 3} elsewhere (4, 6, 6, 6, 4 boxes per location; 2408 boxes at 160 px).
Input normalisation: "imagenet".

``model_options.width`` scales every channel count (:func:`tiny_widths`; 1.5 gives 24, 48, 96,
192 and extras 96 -> 192). The param tree keeps its names; only the shapes change.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ssd_jax.anchors import DefaultBoxSpec, paper_spec
from ssd_jax.errors import ConfigError
from ssd_jax.models.layers import Dtype, conv_bn_act, conv_output_size

BASE_WIDTHS = (16, 32, 64, 128)   # stride-2 stages; the last two are sources
EXTRA_WIDTHS = ((64, 128), (64, 128), (64, 128))
DEFAULT_IMAGE_SIZE = 160


def tiny_widths(width: float = 1.0) -> tuple:
    """``(base_widths, extra_widths)`` with every channel count scaled by ``width`` and rounded to
    the nearest multiple of 8 (at least 8); ``width=1`` gives ``BASE_WIDTHS, EXTRA_WIDTHS``.

    Raises:
      ConfigError: ``width`` is not a positive number.
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ConfigError(f"config.model_options.width must be a positive number (1 = the shipped widths), "
                          f"got {width!r}")

    def scaled(c):
        return max(8, round(c * width / 8) * 8)

    return (tuple(scaled(c) for c in BASE_WIDTHS),
            tuple((scaled(m), scaled(o)) for m, o in EXTRA_WIDTHS))


def _last_block_geometry(size: int) -> tuple:
    """(stride, padding) of the last extra 3x3 conv on an axis of this length."""
    return (1, 0) if size == 3 else (2, 1)


def tiny_feature_map_sizes(image_size) -> tuple:
    """Source map ``(height, width)`` sizes of ``ssd_tiny`` for an input size."""
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    sizes = []
    for axis_size in hw:
        s, out = axis_size, []
        for i in range(len(BASE_WIDTHS) + len(EXTRA_WIDTHS)):
            if i == len(BASE_WIDTHS) + len(EXTRA_WIDTHS) - 1:
                stride, pad = _last_block_geometry(s)
            else:
                stride, pad = 2, 1
            s = conv_output_size(s, 3, stride, pad)
            if s < 1:
                raise ValueError(f"ssd_tiny: image size {hw} is too small (a feature map would be empty)")
            out.append(s)
        sizes.append(out[len(BASE_WIDTHS) - 2:])
    return tuple(zip(*sizes))


def tiny_spec(image_size=DEFAULT_IMAGE_SIZE) -> DefaultBoxSpec:
    """DefaultBoxSpec of ``ssd_tiny`` at ``image_size`` (int or (height, width))."""
    fmaps = tiny_feature_map_sizes(image_size)
    m = len(fmaps)
    ratios = [(2.0,)] + [(2.0, 3.0)] * (m - 2) + [(2.0,)]
    return paper_spec(fmaps, image_size=image_size if isinstance(image_size, int) else tuple(image_size),
                      s_min=0.2, s_max=0.9, aspect_ratios=ratios)


class TinyBase(nn.Module):
    """The stride-2 stages; ``source_convs`` adds the stride-1 3x3 conv on each source stage (the
    receptive-field widening of the module docstring; False gives the 15 / 31 px variant)."""

    widths: tuple = BASE_WIDTHS
    source_convs: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        sources = []
        for i, c in enumerate(self.widths, start=1):
            x = conv_bn_act(x, c, 3, strides=2, padding=1, name=f"conv{i}", train=train, **kw)
            if i > len(self.widths) - 2:
                if self.source_convs:
                    x = conv_bn_act(x, c, 3, padding=1, name=f"conv{i}b", train=train, **kw)
                sources.append(x)
        return sources


class TinyExtras(nn.Module):
    widths: tuple = EXTRA_WIDTHS
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        outs = []
        first = len(BASE_WIDTHS) + 1
        for j, (mid, out) in enumerate(self.widths):
            n = first + j
            x = conv_bn_act(x, mid, 1, name=f"conv{n}_1", train=train, **kw)
            if j == len(self.widths) - 1:
                geo = [_last_block_geometry(s) for s in x.shape[1:3]]
                strides = tuple(g[0] for g in geo)
                padding = tuple((g[1], g[1]) for g in geo)
            else:
                strides, padding = 2, 1
            x = conv_bn_act(x, out, 3, strides=strides, padding=padding, name=f"conv{n}_2", train=train, **kw)
            outs.append(x)
        return outs
