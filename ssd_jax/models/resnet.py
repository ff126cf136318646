"""ResNet-50 SSD300 (NVIDIA DeepLearningExamples "SSD300 v1.1" layout).

Base (params["base"]): torchvision ResNet-50 ``conv1`` 7x7 s2 p3 64 + ``bn1`` + ReLU,
3x3 s2 p1 max pool, ``layer1`` (3 bottlenecks, 256 ch), ``layer2`` (4, 512 ch, stride 2),
``layer3`` (6, 1024 ch) with its first block at stride 1 (NVIDIA sets conv1/conv2/
downsample strides of layer3[0] to 1), so the first source is 38x38x1024 at 300 px;
layer4 is dropped. Bottleneck ``layerL_i`` = ``conv1`` 1x1, ``conv2`` 3x3 (carries the
stride, ResNet v1.5), ``conv3`` 1x1, each with ``bnN``, plus ``downsample_conv`` /
``downsample_bn`` on the first block; names equal torchvision's
(``layerL.i.convN`` -> ``base/layerL_i/convN``, ``layerL.0.downsample.{0,1}`` ->
``downsample_{conv,bn}``). BatchNorm eps 1e-5, torchvision momentum 0.1 (Flax 0.9).

Extras (params["extras"], NVIDIA ``additional_blocks.j.{0,1,3,4}`` ->
``conv{8+j}_1``, ``conv{8+j}_1_bn``, ``conv{8+j}_2``, ``conv{8+j}_2_bn``): 1x1 256 -> 3x3 512 s2,
1x1 256 -> 3x3 512 s2, 1x1 128 -> 3x3 256 s2, 1x1 128 -> 3x3 256 p0, 1x1 128 -> 3x3 256 p0,
convs without bias, BN + ReLU after each; maps 38, 19, 10, 5, 3, 1 (4, 6, 6, 6, 4, 4 boxes,
8732). Heads: plain 3x3 convs (NVIDIA ``loc.i`` / ``conf.i``).

Deviations: default boxes are ``anchors.SSD300_COCO`` (torchvision scales 0.07..1.05,
clipped) instead of NVIDIA's 21, 45, 99, 153, 207, 261, 315 px sizes; all new and base
convs use Xavier uniform init (NVIDIA: ImageNet base, Xavier new layers).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ssd_jax.models.layers import Dtype, conv_bn_act
from ssd_jax.ops.pooling import max_pool

# (bottleneck width, blocks, first stride) of layer1..layer3, NVIDIA variant.
RESNET50_LAYERS = ((64, 3, 1), (128, 4, 2), (256, 6, 1))
EXTRAS_RESNET = ((256, 512, 3, 2, 1), (256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 1, 0),
                 (128, 256, 3, 1, 0))


class Bottleneck(nn.Module):
    width: int
    strides: int = 1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        out_ch = self.width * 4
        y = conv_bn_act(x, self.width, 1, name="conv1", bn_name="bn1", train=train, **kw)
        y = conv_bn_act(y, self.width, 3, strides=self.strides, padding=1, name="conv2", bn_name="bn2",
                        train=train, **kw)
        y = conv_bn_act(y, out_ch, 1, name="conv3", bn_name="bn3", act=None, train=train, **kw)
        if self.strides != 1 or x.shape[-1] != out_ch:
            x = conv_bn_act(x, out_ch, 1, strides=self.strides, name="downsample_conv", bn_name="downsample_bn",
                            act=None, train=train, **kw)
        return nn.relu(x + y)


class ResNet50Base(nn.Module):
    """``images -> [layer3 output]`` (stride 8, 1024 ch)."""

    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = conv_bn_act(x, 64, 7, strides=2, padding=3, name="conv1", bn_name="bn1", train=train, **kw)
        x = max_pool(x, 3, 2, padding=1)
        for li, (width, blocks, stride) in enumerate(RESNET50_LAYERS, start=1):
            for b in range(blocks):
                x = Bottleneck(width, stride if b == 0 else 1, name=f"layer{li}_{b}", **kw)(x, train)
        return [x]
