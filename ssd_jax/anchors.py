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
from collections.abc import Sequence

import numpy as np

from ssd_jax.errors import ConfigError


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

    def replace(self, **changes) -> DefaultBoxSpec:
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


# ----------------------------------------------------------------------------- from a config

CLIP_NAMES = {"none": False, "all": True, "wh": "wh"}


class AnchorConfigError(ConfigError):
    """A ``config.anchors`` value that cannot give default boxes (the message names the field)."""


def _per_map(value, m: int, field: str) -> tuple:
    """One entry per used map: ``value`` as given, or its single entry repeated ``m`` times."""
    value = tuple(value)
    if len(value) == 1 and m > 1:
        value = value * m
    if len(value) != m:
        raise AnchorConfigError(f"config.anchors.{field} has {len(value)} entries but {m} source maps are used")
    return value


def _ratio_sets(value, m: int) -> tuple:
    """``aspect_ratios`` as per-map tuples: ``(2, 3)`` (every map) or ``((2,), (2, 3), ...)``."""
    value = tuple(value)
    if all(isinstance(r, (int, float)) for r in value):
        value = (value,)
    sets = _per_map(value, m, "aspect_ratios")
    for k, ratios in enumerate(sets):
        if isinstance(ratios, (int, float)) or any(not isinstance(r, (int, float)) or r <= 0 for r in ratios):
            raise AnchorConfigError(f"config.anchors.aspect_ratios[{k}] must be ratios > 0 (each r adds r and "
                                    f"1/r), got {ratios!r}")
    return tuple(tuple(float(r) for r in ratios) for ratios in sets)


def spec_from_config(model_spec: DefaultBoxSpec, cfg) -> tuple[DefaultBoxSpec, tuple]:
    """The default boxes a ``config.anchors`` section asks for, on a model's source maps.

    Args:
      model_spec: the model's own spec (one entry per source map the network produces).
      cfg: mapping with ``sources`` (indices of the model's source maps that predict, ascending;
        empty = all), ``s_min`` / ``s_max`` (the paper's formula over the used maps, fractions of the
        shorter image side; 0 = not used), ``min_sizes`` / ``max_sizes`` (pixels, one per used map or
        one for all; empty = not used), ``aspect_ratios`` (per used map the ratios ``r`` each adding
        ``r`` and ``1/r``, or one tuple for every map; ``((),)`` = squares only; empty = the model's),
        ``clip`` ("" = the model's, "none", "all", "wh") and ``offset`` (cells; the model's is 0.5).
        Fields left at those "empty" values keep the model's choice, so a default section gives
        back ``model_spec`` unchanged.
    Returns:
      ``(spec, sources)``: the spec (feature maps and steps of the used maps) and the used map
      indices as a tuple. Without sizes or a formula, dropped maps take their own sizes away and
      the used maps keep theirs (the paper's Table 3 re-spreads the scales: set s_min / s_max).
    Raises:
      AnchorConfigError: a value that cannot work, naming the field.
    """
    n = len(model_spec.feature_map_sizes)
    sources = tuple(int(i) for i in cfg.get("sources", ()) or range(n))
    if any(i < 0 or i >= n for i in sources) or list(sources) != sorted(set(sources)):
        raise AnchorConfigError(f"config.anchors.sources must be distinct ascending indices of the model's {n} "
                                f"source maps (0..{n - 1}), got {tuple(cfg.get('sources'))}")
    m = len(sources)
    pick = lambda values: tuple(values[i] for i in sources)
    min_sizes, max_sizes = pick(model_spec.min_sizes), pick(model_spec.max_sizes)
    s_min, s_max = float(cfg.get("s_min", 0) or 0), float(cfg.get("s_max", 0) or 0)
    explicit_sizes = bool(cfg.get("min_sizes")) or bool(cfg.get("max_sizes"))
    if s_min or s_max:
        if explicit_sizes:
            raise AnchorConfigError("config.anchors: give s_min/s_max or min_sizes/max_sizes, not both")
        if not 0 < s_min < s_max:
            raise AnchorConfigError(f"config.anchors.s_min={s_min} and s_max={s_max}: need 0 < s_min < s_max")
        short = min(model_spec.image_size)
        scales = paper_scales(m, s_min, s_max) + [1.0]
        min_sizes = tuple(s * short for s in scales[:m])
        max_sizes = tuple(s * short for s in scales[1:])
    elif explicit_sizes:
        if not (cfg.get("min_sizes") and cfg.get("max_sizes")):
            raise AnchorConfigError("config.anchors.min_sizes and max_sizes must be given together")
        min_sizes = tuple(float(s) for s in _per_map(cfg["min_sizes"], m, "min_sizes"))
        max_sizes = tuple(float(s) for s in _per_map(cfg["max_sizes"], m, "max_sizes"))
        if any(s <= 0 for s in min_sizes + max_sizes):
            raise AnchorConfigError(f"config.anchors.min_sizes / max_sizes must be > 0 pixels, got {min_sizes} "
                                    f"/ {max_sizes}")
    ratios = _ratio_sets(cfg["aspect_ratios"], m) if cfg.get("aspect_ratios") else pick(model_spec.aspect_ratios)
    clip = cfg.get("clip", "") or ""
    if clip and clip not in CLIP_NAMES:
        raise AnchorConfigError(f"config.anchors.clip must be '', none, all or wh, got {clip!r}")
    offset = float(cfg.get("offset", model_spec.offset))
    if not 0 <= offset <= 1:
        raise AnchorConfigError(f"config.anchors.offset must be in [0, 1] cells, got {offset}")
    spec = model_spec.replace(
        feature_map_sizes=pick(model_spec.feature_map_sizes),
        steps=pick(model_spec.steps) if model_spec.steps is not None else None,
        min_sizes=min_sizes, max_sizes=max_sizes, aspect_ratios=ratios,
        clip=CLIP_NAMES[clip] if clip else model_spec.clip, offset=offset)
    return spec, sources


def spec_to_dict(spec: DefaultBoxSpec) -> dict:
    """A JSON-ready dict of ``spec`` (``model.json``'s record of the boxes a model was trained with)."""
    return {field.name: getattr(spec, field.name) for field in dataclasses.fields(spec)}


def spec_from_dict(d: dict) -> DefaultBoxSpec:
    """Inverse of :func:`spec_to_dict` (lists from JSON become the spec's tuples)."""
    return DefaultBoxSpec(**{k: (tuple(tuple(x) if isinstance(x, list) else x for x in v)
                                 if isinstance(v, list) else v) for k, v in d.items()})
