"""VGG16 SSD300 / SSD512 (Liu et al. 2016, the released Caffe models).

Base (params["base"]): VGG16 conv1_1 .. conv5_3 (3x3 pad 1 + ReLU, 2x2 max pools; pool3
in ceil mode so 75 -> 38 at 300 px), pool5 3x3 stride 1 pad 1, fc6 3x3 dilation 6 pad 6
1024 ch, fc7 1x1 1024 ch, no dropout. Sources: conv4_3 (after ReLU) L2-normalised with a
learnable per-channel scale initialised to 20 (``conv4_3_norm``), and fc7.

Extras (params["extras"]), 1x1 then 3x3, ReLU after each conv:
  conv8_1 256 / conv8_2 512 s2 p1; conv9_1 128 / conv9_2 256 s2 p1;
  SSD300: conv10_x, conv11_x: 128 / 256 3x3 p0 (5 -> 3 -> 1);
  SSD512: conv10_x, conv11_x: 128 / 256 3x3 s2 p1, conv12_1 128 / conv12_2 256 4x4 p1.
Heads: ``heads/loc_i``, ``heads/conf_i``, 3x3 pad 1 convs.

Weight correspondence (PyTorch kernels ``[O, I, kh, kw]`` -> ours ``[kh, kw, I, O]``
via ``transpose(2, 3, 1, 0)``; Caffe/ssd.pytorch conv1_1 expects BGR input, so flip its
input-channel axis for our RGB input):

=====================  =======================================  ===================================
ours                    torchvision ``ssd300_vgg16``             ssd.pytorch
=====================  =======================================  ===================================
base/conv1_1..conv4_3   backbone.features.{0,2,5,7,10,12,14,     vgg.{0,2,5,7,10,12,14,17,19,21}
                        17,19,21}
base/conv4_3_norm/scale backbone.scale_weight                    L2Norm.weight
base/conv5_1..conv5_3   backbone.extra.0.{1,3,5}                 vgg.{24,26,28}
base/fc6, base/fc7      backbone.extra.0.7.{1,3}                 vgg.{31,33}
extras/conv8_1..        backbone.extra.{1..}.{0,2}               extras.{0,1,2,...}
heads/loc_i             head.regression_head.module_list.i      loc.i
heads/conf_i            head.classification_head.module_list.i  conf.i
=====================  =======================================  ===================================

Deviation: none in the layers. Inputs are RGB ("caffe" normalisation: 0..255 minus the
RGB mean (123, 117, 104), no scaling), see :func:`ssd_jax.models.input_normalization`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ssd_jax.models.layers import Conv, Dtype, L2Norm, conv_bn_act
from ssd_jax.ops.pooling import max_pool

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

# (1x1 channels, 3x3 channels, kernel, stride, padding) per extra block, conv8 onwards.
EXTRAS_300 = ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 1, 0), (128, 256, 3, 1, 0))
EXTRAS_512 = ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1),
              (128, 256, 4, 1, 1))


class VGG16Base(nn.Module):
    """Reduced, atrous VGG16: ``images -> [conv4_3 (L2-normalised), fc7]``."""

    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        sources = []
        for s, widths in enumerate(VGG16_STAGES, start=1):
            if s > 1:  # pool1, pool2, pool3 (ceil mode), pool4
                x = max_pool(x, 2, 2, ceil_mode=(s == 4))
            for i, c in enumerate(widths, start=1):
                x = nn.relu(Conv(c, 3, padding=1, name=f"conv{s}_{i}", **kw)(x))
            if s == 4:
                sources.append(L2Norm(20.0, name="conv4_3_norm", **kw)(x))
        x = max_pool(x, 3, 1, padding=1)  # pool5
        x = nn.relu(Conv(1024, 3, padding=6, dilation=6, name="fc6", **kw)(x))
        x = nn.relu(Conv(1024, 1, name="fc7", **kw)(x))
        sources.append(x)
        return sources


class ConvExtras(nn.Module):
    """SSD extra layers: blocks of 1x1 conv + act, kxk conv + act; returns each block's output.

    ``blocks``: (mid channels, out channels, kernel, stride, padding) per block. Block ``j``
    is named ``conv{first_index + j}_1`` / ``_2``. With ``batch_norm`` each conv has no bias
    and is followed by BatchNorm (``_bn`` suffix), as in NVIDIA's ResNet-50 SSD.
    """

    blocks: Sequence[tuple]
    first_index: int = 8
    batch_norm: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        outs = []

        for j, (mid, out, k, s, p) in enumerate(self.blocks):
            n = self.first_index + j
            x = conv_bn_act(x, mid, 1, name=f"conv{n}_1", batch_norm=self.batch_norm, train=train, **kw)
            x = conv_bn_act(x, out, k, strides=s, padding=p, name=f"conv{n}_2", batch_norm=self.batch_norm,
                            train=train, **kw)
            outs.append(x)
        return outs
