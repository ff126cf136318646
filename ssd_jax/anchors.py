"""Default boxes (anchors) of SSD.

A :class:`DefaultBoxSpec` describes the grid of default boxes of one model input
size; :func:`default_boxes` turns it into a ``float32 [A, 4]`` array of
``(cx, cy, w, h)`` boxes normalised to [0, 1].

Order (Caffe, ssd.pytorch and torchvision, which weight converters rely on): map by
map, then location row-major (row ``i`` over the height, column ``j`` over the
width), then the boxes of one location: the ``min_size`` square, the
``sqrt(min_size * max_size)`` square, then for each aspect ratio ``r`` the boxes of
ratio ``r`` and ``1 / r`` (width / height).

Sizes are in input pixels, as in Caffe: a box of size ``s`` and ratio ``r`` is
``s * sqrt(r)`` pixels wide and ``s / sqrt(r)`` pixels tall, normalised by the
image width and height respectively, so square boxes stay square in pixels on
non-square inputs. Centres are ``((j + offset) * step_x / W, (i + offset) * step_y / H)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np


def _pairs(values, name):
    out = []
    for v in values:
        if isinstance(v, (int, float)):
            out.append((v, v))
        elif len(v) == 2:
            out.append((v[0], v[1]))
        else:
            raise ValueError(f"{name}: each entry must be a number or a (height, width) pair, got {v!r}")
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class DefaultBoxSpec:
    """Default-box grid of an SSD model.

    Attributes:
      image_size: ``(height, width)`` of the model input in pixels (an int means square).
      feature_map_sizes: per source map, ``(height, width)`` in cells (ints mean square).
      steps: per source map, ``(step_y, step_x)`` in pixels; ``None`` uses image / map size.
      min_sizes: per source map, the size in pixels of the small square box.
      max_sizes: per source map, the size in pixels that, with ``min_size``, gives the
        extra square box of size ``sqrt(min_size * max_size)``.
      aspect_ratios: per source map, the ratios ``r > 1`` used; each adds ``r`` and ``1 / r``.
      clip: ``False`` (Caffe SSD300), ``True``: clip all of ``(cx, cy, w, h)`` to [0, 1]
        (ssd.pytorch), or ``"wh"``: clip only ``w`` and ``h`` (torchvision's DefaultBoxGenerator).
      offset: centre offset of a box within its cell, in cells.
    """

    image_size: tuple
    feature_map_sizes: tuple
    min_sizes: tuple
    max_sizes: tuple
    aspect_ratios: tuple
    steps: tuple | None = None
    clip: bool | str = False
    offset: float = 0.5

    def __post_init__(self):
        size = self.image_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"DefaultBoxSpec.image_size must be (height, width) > 0, got {self.image_size!r}")
        object.__setattr__(self, "image_size", size)
        fmaps = _pairs(self.feature_map_sizes, "DefaultBoxSpec.feature_map_sizes")
        object.__setattr__(self, "feature_map_sizes", fmaps)
        n = len(fmaps)
        if self.steps is not None:
            object.__setattr__(self, "steps", _pairs(self.steps, "DefaultBoxSpec.steps"))
        object.__setattr__(self, "min_sizes", tuple(float(s) for s in self.min_sizes))
        object.__setattr__(self, "max_sizes", tuple(float(s) for s in self.max_sizes))
        object.__setattr__(self, "aspect_ratios", tuple(tuple(float(r) for r in ars) for ars in self.aspect_ratios))
        for name in ("min_sizes", "max_sizes", "aspect_ratios") + (("steps",) if self.steps is not None else ()):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"DefaultBoxSpec.{name} has {len(getattr(self, name))} entries but there are "
                    f"{n} feature maps")
        if self.clip not in (True, False, "wh"):
            raise ValueError(f"DefaultBoxSpec.clip must be True, False or 'wh', got {self.clip!r}")
        for k, ars in enumerate(self.aspect_ratios):
            if any(r <= 0 for r in ars):
                raise ValueError(f"DefaultBoxSpec.aspect_ratios[{k}] must be positive, got {ars}")

    @property
    def boxes_per_location(self) -> tuple:
        """Number of default boxes at each location, per source map."""
        return tuple(2 + 2 * len(ars) for ars in self.aspect_ratios)

    @property
    def num_boxes_per_map(self) -> tuple:
        return tuple(h * w * k for (h, w), k in zip(self.feature_map_sizes, self.boxes_per_location))

    @property
    def num_boxes(self) -> int:
        """Total number of default boxes ``A``."""
        return sum(self.num_boxes_per_map)

    def replace(self, **changes) -> "DefaultBoxSpec":
        return dataclasses.replace(self, **changes)


def _box_sizes(min_size, max_size, ratios):
    """``[k, 2]`` (width, height) in pixels for one location, in Caffe's order."""
    sizes = [(min_size, min_size)]
    extra = math.sqrt(min_size * max_size)
    sizes.append((extra, extra))
    for r in ratios:
        sr = math.sqrt(r)
        sizes.append((min_size * sr, min_size / sr))
        sizes.append((min_size / sr, min_size * sr))
    return np.asarray(sizes, np.float64)


def default_boxes(spec: DefaultBoxSpec) -> np.ndarray:
    """All default boxes of ``spec`` as ``float32 [A, 4]`` ``(cx, cy, w, h)``, in [0, 1] units.

    Returned as a NumPy array (a constant of the model); pass it to jitted functions
    as an argument or close over it.
    """
    img_h, img_w = spec.image_size
    out = []
    for k, (fh, fw) in enumerate(spec.feature_map_sizes):
        step_y, step_x = spec.steps[k] if spec.steps is not None else (img_h / fh, img_w / fw)
        cy = (np.arange(fh) + spec.offset) * step_y / img_h
        cx = (np.arange(fw) + spec.offset) * step_x / img_w
        cyy, cxx = np.meshgrid(cy, cx, indexing="ij")  # [fh, fw]
        wh = _box_sizes(spec.min_sizes[k], spec.max_sizes[k], spec.aspect_ratios[k])
        wh = wh / np.array([img_w, img_h])
        nb = wh.shape[0]
        boxes = np.empty((fh, fw, nb, 4), np.float64)
        boxes[..., 0] = cxx[:, :, None]
        boxes[..., 1] = cyy[:, :, None]
        boxes[..., 2:] = wh[None, None]
        out.append(boxes.reshape(-1, 4))
    boxes = np.concatenate(out, axis=0)
    if spec.clip == "wh":
        boxes[:, 2:] = np.clip(boxes[:, 2:], 0.0, 1.0)
    elif spec.clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    return boxes.astype(np.float32)


def paper_spec(feature_map_sizes: Sequence, image_size=300, s_min: float = 0.2, s_max: float = 0.9,
               aspect_ratios: Sequence | None = None, clip: bool = False) -> DefaultBoxSpec:
    """Default boxes from the paper's formula (section 2.2 of Liu et al.).

    ``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)`` for maps ``k = 1..m``; the
    extra square box uses ``sqrt(s_k s_{k+1})`` with ``s_{m+1} = 1``; centres at
    ``(i + 0.5) / |f_k|``. Scales are relative to the shorter image side.
    Aspect ratios default to ``{2, 3}`` (with flips) on every map, i.e. 6 boxes per location.
    """
    m = len(feature_map_sizes)
    scales = paper_scales(m, s_min, s_max) + [1.0]
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    short = min(size)
    if aspect_ratios is None:
        aspect_ratios = [(2.0, 3.0)] * m
    return DefaultBoxSpec(
        image_size=size, feature_map_sizes=tuple(feature_map_sizes),
        min_sizes=tuple(s * short for s in scales[:m]), max_sizes=tuple(s * short for s in scales[1:]),
        aspect_ratios=tuple(tuple(a) for a in aspect_ratios), steps=None, clip=clip)


def paper_scales(m: int, s_min: float = 0.2, s_max: float = 0.9) -> list:
    """The paper's ``m`` scales, ``s_min`` to ``s_max`` evenly spaced."""
    if m == 1:
        return [s_min]
    return [s_min + (s_max - s_min) * k / (m - 1) for k in range(m)]


# The released Caffe SSD300 (VOC): what every reported SSD300 number uses.
SSD300_VOC = DefaultBoxSpec(
    image_size=300,
    feature_map_sizes=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    min_sizes=(30, 60, 111, 162, 213, 264),
    max_sizes=(60, 111, 162, 213, 264, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
)

# The released Caffe SSD512 (VOC): conv4_3 at 4%, then 15% ... 90% in steps of 15%.
SSD512_VOC = DefaultBoxSpec(
    image_size=512,
    feature_map_sizes=(64, 32, 16, 8, 4, 2, 1),
    steps=(8, 16, 32, 64, 128, 256, 512),
    min_sizes=(20.48, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
    max_sizes=(51.2, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
)

# torchvision ssd300_vgg16 (COCO): scales 0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05; w, h clipped.
_COCO_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
SSD300_COCO = DefaultBoxSpec(
    image_size=300,
    feature_map_sizes=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    min_sizes=tuple(300 * s for s in _COCO_SCALES[:-1]),
    max_sizes=tuple(300 * s for s in _COCO_SCALES[1:]),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    clip="wh",
)
