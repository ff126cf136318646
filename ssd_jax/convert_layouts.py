"""What each PyTorch checkpoint ``ssd_jax.convert`` reads looks like: keys, shapes, class names.

A layout is a list of ``(our path, torch key prefix, in, out, kernel)``, one per layer in network
order; our path is a tuple into ``models.create("ssd300_vgg16", C)``'s params; kernel 0 marks a
1-D per-channel parameter stored under the full torch key (the L2Norm scale), otherwise the
torch layer has ``<prefix>.weight`` ``[out, in, kernel, kernel]`` and ``<prefix>.bias`` ``[out]``.
Key correspondence: see the table in :mod:`ssd_jax.models.vgg`. Plain tables without imports:
``experiments/make_convert_fixtures.py`` checks them against the real PyTorch modules.
"""

from __future__ import annotations

SOURCES = ("torchvision_ssd300", "ssd_pytorch", "vgg16_imagenet", "vgg16_reducedfc")

# (name, in, out, kernel) of the reduced VGG16 base; conv1_1 .. conv5_3 are 3x3.
_VGG_CONVS = (("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
              ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
              ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
              ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512))
_VGG_FEATURE_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision vgg16().features / ssd.pytorch vgg
_FC = (("fc6", 512, 1024, 3), ("fc7", 1024, 1024, 1))
# SSD300 extras (name, in, out, kernel), in order.
_EXTRAS = (("conv8_1", 1024, 256, 1), ("conv8_2", 256, 512, 3), ("conv9_1", 512, 128, 1), ("conv9_2", 128, 256, 3),
           ("conv10_1", 256, 128, 1), ("conv10_2", 128, 256, 3), ("conv11_1", 256, 128, 1), ("conv11_2", 128, 256, 3))
_SOURCE_CHANNELS = (512, 1024, 512, 256, 256, 256)
BOXES_PER_LOCATION = (4, 6, 6, 6, 4, 4)

# torchvision.models.detection._meta._COCO_CATEGORIES: the 91 labels of torchvision's COCO models.
COCO_91_CLASS_NAMES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet",
    "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
# ssd.pytorch data/voc0712.py VOC_CLASSES (label i + 1), background first.
VOC_21_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def _base_layout(conv_keys, fc_keys, scale_key):
    entries = [(("base", name), key, cin, cout, 3) for (name, cin, cout), key in zip(_VGG_CONVS, conv_keys)]
    entries += [(("base", name), key, cin, cout, k) for (name, cin, cout, k), key in zip(_FC, fc_keys)]
    if scale_key is not None:
        entries.append((("base", "conv4_3_norm", "scale"), scale_key, 512, 512, 0))
    return entries


def _heads_layout(num_classes, loc_key, conf_key):
    entries = []
    for i, (c, k) in enumerate(zip(_SOURCE_CHANNELS, BOXES_PER_LOCATION)):
        entries.append((("heads", f"loc_{i}"), loc_key.format(i), c, k * 4, 3))
        entries.append((("heads", f"conf_{i}"), conf_key.format(i), c, k * num_classes, 3))
    return entries


def layout(source: str, num_classes: int | None = None) -> list:
    """The layout of ``source`` (one of :data:`SOURCES`); ``num_classes`` sizes the heads."""
    if source == "torchvision_ssd300":
        tv = "backbone.features.{}".format
        conv_keys = [tv(i) for i in _VGG_FEATURE_INDEX[:10]] + [f"backbone.extra.0.{i}" for i in (1, 3, 5)]
        entries = _base_layout(conv_keys, ["backbone.extra.0.7.1", "backbone.extra.0.7.3"], "backbone.scale_weight")
        entries += [(("extras", name), f"backbone.extra.{1 + j // 2}.{2 * (j % 2)}", cin, cout, k)
                    for j, (name, cin, cout, k) in enumerate(_EXTRAS)]
        return entries + _heads_layout(num_classes, "head.regression_head.module_list.{}",
                                       "head.classification_head.module_list.{}")
    if source in ("ssd_pytorch", "vgg16_reducedfc"):
        conv_keys = [f"vgg.{i}" for i in _VGG_FEATURE_INDEX]
        if source == "vgg16_reducedfc":  # the bare vgg ModuleList: keys "0.weight" .. "33.bias"
            return _base_layout([str(i) for i in _VGG_FEATURE_INDEX], ["31", "33"], None)
        entries = _base_layout(conv_keys, ["vgg.31", "vgg.33"], "L2Norm.weight")
        entries += [(("extras", name), f"extras.{j}", cin, cout, k) for j, (name, cin, cout, k) in enumerate(_EXTRAS)]
        return entries + _heads_layout(num_classes, "loc.{}", "conf.{}")
    if source == "vgg16_imagenet":  # fc6/fc7 are handled by vgg16_base_from_torchvision_imagenet
        return _base_layout([f"features.{i}" for i in _VGG_FEATURE_INDEX], [], None)
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")


def expected_shapes(source: str, num_classes: int | None = None) -> dict:
    """``{torch key: shape}`` of every tensor the converter of ``source`` reads, in network order.

    ``vgg16_imagenet`` also lists the classifier layers fc6 / fc7 are made from
    (``classifier.0`` ``[4096, 25088]``, ``classifier.3`` ``[4096, 4096]``).
    """
    if source in ("torchvision_ssd300", "ssd_pytorch") and (not isinstance(num_classes, int) or num_classes < 2):
        raise ValueError(f"{source}: num_classes must be an int >= 2, got {num_classes!r}")
    shapes = {}
    for _, key, cin, cout, k in layout(source, num_classes):
        if k == 0:
            shapes[key] = (cout,)
        else:
            shapes[key + ".weight"] = (cout, cin, k, k)
            shapes[key + ".bias"] = (cout,)
    if source == "vgg16_imagenet":
        shapes.update({"classifier.0.weight": (4096, 512 * 7 * 7), "classifier.0.bias": (4096,),
                       "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,)})
    return shapes
