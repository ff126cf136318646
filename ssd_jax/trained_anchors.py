"""The default boxes a workdir's weights were trained with, read from its ``model.json``.

A box head only works with the default boxes it was trained with. Workdirs written by training
use the model factory's own (``models.create``'s spec) and record nothing; workdirs converted
from PyTorch (``ssd_jax.convert``) record them under ``"anchors"`` as a preset of
:mod:`ssd_jax.anchors` and a clipping mode (:data:`TRAINED_ANCHORS`): torchvision =
``SSD300_COCO`` with only w, h clipped (its DefaultBoxGenerator; the 10x10 map's last centres
lie at 304 px), ssd.pytorch = ``SSD300_VOC`` with all four clipped (its PriorBox).

Needs only NumPy at import time (the converter's fixture script runs without JAX).
"""

from __future__ import annotations

import numpy as np

from ssd_jax import anchors

# clip: "none" (Caffe), "all" = (cx, cy, w, h) clamped to [0, 1] (ssd.pytorch PriorBox, and
# anchors.DefaultBoxSpec(clip=True)), "wh" = only w and h clamped (torchvision DefaultBoxGenerator:
# the 10x10 map's last centres, (9 + 0.5) * 32 / 300 = 1.013, stay outside [0, 1]).
TRAINED_ANCHORS = {"torchvision_ssd300": {"preset": "SSD300_COCO", "clip": "wh"},
                   "ssd_pytorch": {"preset": "SSD300_VOC", "clip": "all"}}


def trained_spec(info: dict, default=None):
    """The ``anchors.DefaultBoxSpec`` named by ``model.json``'s ``"anchors"`` entry (see
    :data:`TRAINED_ANCHORS`): the preset of ``ssd_jax.anchors`` with that clipping; ``default``
    (the model factory's spec) when the entry is absent, as in workdirs written by training."""
    entry = info.get("anchors")
    if not entry:
        if default is None:
            raise ValueError("model.json has no 'anchors' entry and no default spec was given")
        return default
    spec = getattr(anchors, entry["preset"], None)
    if not isinstance(spec, anchors.DefaultBoxSpec):
        raise ValueError(f"model.json anchors: unknown preset {entry['preset']!r}")
    clip = {"none": False, "all": True, "wh": "wh"}.get(entry.get("clip", "none"))
    if clip is None:
        raise ValueError(f"model.json anchors: clip must be none, all or wh, got {entry.get('clip')!r}")
    return spec.replace(clip=clip)


def trained_default_boxes(info: dict) -> np.ndarray:
    """Default boxes ``float32 [A, 4]`` ``(cx, cy, w, h)`` of :func:`trained_spec`."""
    return anchors.default_boxes(trained_spec(info, anchors.SSD300_VOC))
