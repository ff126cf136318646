"""SSD models in Flax Linen and their factory.

    module, spec = models.create("ssd300_vgg16", num_classes=21, dtype=jnp.bfloat16)
    variables = module.init(rng, jnp.zeros((1, *spec.image_size, 3)), train=False)
    loc, logits = module.apply(variables, images, train=False)     # [B, A, 4], [B, A, C] float32
    (loc, logits), updates = module.apply(variables, images, train=True, mutable=["batch_stats"])

Outputs are in the order of ``ssd_jax.anchors.default_boxes(spec)``; ``module`` and
``spec`` always come together from :func:`create`. Images are RGB NHWC float32,
normalised as :func:`input_normalization` says. Params trees have ``base``, ``extras``
and ``heads`` subtrees (see :mod:`ssd_jax.models.ssd`); :func:`ssd_jax.optim.trainable_params_mask`
gives the optax mask for fine-tuning with a frozen base network.

BatchNorm layers (ResNet-50, MobileNetV2, ssd_tiny) take ``train``; under a global-view
``jax.jit`` with a batch sharded over devices, their batch statistics are over the global
batch (no ``axis_name``). Models without BatchNorm return ``updates == {}``.

Registered models:

===========================  =====  ==========  ============  ==============================
name                          input  boxes       normalisation  spec
===========================  =====  ==========  ============  ==============================
``ssd300_vgg16``              300    8732        caffe          ``anchors.SSD300_VOC``
``ssd512_vgg16``              512    24564       caffe          ``anchors.SSD512_VOC``
``ssdlite320_mobilenet_v2``   320    3234        imagenet       :data:`SSDLITE320_SPEC`
``ssd300_resnet50``           300    8732        imagenet       ``anchors.SSD300_COCO``
``ssd_tiny``                  160*   2408        imagenet       :func:`tiny.tiny_spec`
===========================  =====  ==========  ============  ==============================

(* any ``image_size``, int or (height, width); the other models have fixed input sizes.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax.numpy as jnp

from ssd_jax import anchors as anchor_lib
from ssd_jax.errors import ConfigError
from ssd_jax.models.layers import Conv, L2Norm
from ssd_jax.models.mobilenet_v2 import MobileNetV2Base, SSDLiteExtras
from ssd_jax.models.resnet import EXTRAS_RESNET, ResNet50Base
from ssd_jax.models.ssd import SSD
from ssd_jax.models.tiny import DEFAULT_IMAGE_SIZE as TINY_IMAGE_SIZE
from ssd_jax.models.tiny import TinyBase, TinyExtras, tiny_spec, tiny_widths
from ssd_jax.models.vgg import EXTRAS_300, EXTRAS_512, ConvExtras, VGG16Base

# torchvision ssdlite320_mobilenet_v2: DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2,
# max_ratio=0.95) = the paper's formula with s_min 0.2, s_max 0.95, 6 boxes per location,
# clipped to [0, 1]; maps 20, 10, 5, 3, 2, 1 at 320 px.
SSDLITE320_SPEC = anchor_lib.paper_spec((20, 10, 5, 3, 2, 1), image_size=320, s_min=0.2, s_max=0.95, clip=True)


def _fixed_size(name, spec, image_size):
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if size != tuple(spec.image_size):
            raise ValueError(f"{name} supports only image_size {spec.image_size}, got {image_size!r}")
    return spec


def _ssd300_vgg16(num_classes, dtype, param_dtype, image_size):
    spec = _fixed_size("ssd300_vgg16", anchor_lib.SSD300_VOC, image_size)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    return SSD(VGG16Base(**kw), ConvExtras(EXTRAS_300, **kw), spec, num_classes, "conv", **kw), spec


def _ssd512_vgg16(num_classes, dtype, param_dtype, image_size):
    spec = _fixed_size("ssd512_vgg16", anchor_lib.SSD512_VOC, image_size)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    return SSD(VGG16Base(**kw), ConvExtras(EXTRAS_512, **kw), spec, num_classes, "conv", **kw), spec


def _ssdlite320(num_classes, dtype, param_dtype, image_size):
    spec = _fixed_size("ssdlite320_mobilenet_v2", SSDLITE320_SPEC, image_size)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    return SSD(MobileNetV2Base(**kw), SSDLiteExtras(**kw), spec, num_classes, "separable", **kw), spec


def _ssd300_resnet50(num_classes, dtype, param_dtype, image_size):
    spec = _fixed_size("ssd300_resnet50", anchor_lib.SSD300_COCO, image_size)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    extras = ConvExtras(EXTRAS_RESNET, batch_norm=True, **kw)
    return SSD(ResNet50Base(**kw), extras, spec, num_classes, "conv", **kw), spec


def _ssd_tiny(num_classes, dtype, param_dtype, image_size, source_convs: bool = True, width: float = 1.0):
    spec = tiny_spec(TINY_IMAGE_SIZE if image_size is None else image_size)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    base_widths, extra_widths = tiny_widths(width)
    base = TinyBase(widths=base_widths, source_convs=bool(source_convs), **kw)
    return SSD(base, TinyExtras(widths=extra_widths, **kw), spec, num_classes, "conv", **kw), spec


_REGISTRY: dict[str, tuple[Callable, str]] = {
    "ssd300_vgg16": (_ssd300_vgg16, "caffe"),
    "ssd512_vgg16": (_ssd512_vgg16, "caffe"),
    "ssdlite320_mobilenet_v2": (_ssdlite320, "imagenet"),
    "ssd300_resnet50": (_ssd300_resnet50, "imagenet"),
    "ssd_tiny": (_ssd_tiny, "imagenet"),
}


def names() -> tuple:
    """Names accepted by :func:`create`."""
    return tuple(_REGISTRY)


def _lookup(name):
    if name not in _REGISTRY:
        raise ValueError(f"unknown SSD model {name!r}; known models: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create(name: str, num_classes: int, *, dtype=None, param_dtype=jnp.float32, image_size=None, anchors=None,
           options=None):
    """Build model ``name`` for ``num_classes`` classes (background included).

    Args:
      dtype: compute dtype (e.g. ``jnp.bfloat16``); ``None`` = float32. Outputs are float32.
      param_dtype: dtype of the parameters (float32 by default).
      image_size: input size, int or (height, width); only ``ssd_tiny`` accepts sizes
        other than its default, the others accept their own size or raise.
      anchors: a ``config.anchors`` section (see ``anchors.spec_from_config``): which source maps
        predict and their default boxes; the heads follow it (boxes per location, maps). ``None``
        or the default section gives the model's own boxes and the same params tree as always.
      options: a ``config.model_options`` mapping of the model's own switches (``ssd_tiny``:
        ``source_convs``, ``width``); an option the model does not have is a ``ConfigError``.
    Returns:
      ``(module, spec)``: the Flax module and its ``anchors.DefaultBoxSpec``.
    Raises:
      ValueError: an unknown model or a size it does not support; ``anchors.AnchorConfigError``
        (a ``ConfigError``) for an anchors section that cannot work, naming the field.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (background + objects), got {num_classes!r}")
    build, _ = _lookup(name)
    options = dict(options.items()) if options else {}
    accepted = list(inspect.signature(build).parameters)[4:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"config.model_options: {name} has no option {', '.join(unknown)}; its options: "
                          f"{', '.join(accepted) or 'none'}")
    module, spec = build(num_classes, dtype, param_dtype, image_size, **options)
    if anchors:
        all_maps = tuple(range(len(spec.feature_map_sizes)))
        spec, sources = anchor_lib.spec_from_config(spec, anchors)
        module = module.clone(spec=spec, sources=None if sources == all_maps else sources)
    return module, spec


def from_model_info(info: dict, dtype=None):
    """``(module, spec)`` of a workdir's ``model.json``: its model, classes, input size and the
    default boxes it was trained with (``anchor_config`` of a training run, or a converted
    checkpoint's preset, ``ssd_jax.trained_anchors``)."""
    from ssd_jax.trained_anchors import trained_spec

    module, spec = create(info["model"], int(info["num_classes"]), dtype=dtype, image_size=tuple(info["image_size"]),
                          anchors=info.get("anchor_config"), options=info.get("model_options"))
    return module, trained_spec(info, spec)


def config_spec(config) -> anchor_lib.DefaultBoxSpec:
    """The default boxes a training config's model uses (its ``model``, ``image_size``, ``anchors``)."""
    return create(config.model, 2, image_size=config.get("image_size"), anchors=config.get("anchors"),
                  options=config.get("model_options"))[1]


def input_normalization(name: str) -> str:
    """How the data pipeline must normalise RGB images for model ``name``.

    "caffe": pixel values 0..255 minus the RGB mean (123, 117, 104) (Caffe VGG16, ssd.pytorch,
    torchvision ssd300_vgg16). "imagenet": values in [0, 1], minus mean (0.485, 0.456, 0.406),
    divided by std (0.229, 0.224, 0.225).
    """
    return _lookup(name)[1]


__all__ = ["SSD", "SSDLITE320_SPEC", "Conv", "L2Norm", "config_spec", "create", "from_model_info",
           "input_normalization", "names"]
