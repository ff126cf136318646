"""Synthetic detection task: coloured shapes on cluttered backgrounds, generated on the fly.

Example ``i`` of split ``split`` is a pure function of ``(seed, split, i)`` and the generator
settings. Boxes are corners ``(xmin, ymin, xmax, ymax)`` in [0, 1] with pixel-edge convention:
an object whose drawn pixels span columns ``c0..c1`` has ``xmin = c0 / W`` and ``xmax = (c1 + 1) / W``.
They are tight around the full drawn shape (shapes drawn later may partly cover earlier ones;
overlaps are limited to IoU <= 0.3 so every object stays recognisable).
Labels are 1..4 for ``SHAPE_CLASSES`` (0 is background).

The defaults give the easy ``shapes`` task (sides 0.2-0.5 of the image, nearly square). Keyword
settings (``data.shapes.*``; :func:`generator_kwargs` reads them from a config) make it harder
without changing the classes, and leave the default examples bit-identical:
  min_side / max_side: object size (geometric mean of width and height) as a fraction of the
    image side; side_distribution "uniform" (default) or "log" (log-uniform: as many small as
    large objects);
  min_aspect / max_aspect: width / height drawn log-uniformly in this range (default 0.6-1.6;
    1/3-3 gives ellipses, bars, stretched triangles and crosses); max_extent: cap of either side;
  max_overlap_iou: the IoU allowed between boxes (higher = more occlusion);
  min_visible: each earlier object keeps at least this fraction of its pixels visible when later
    objects are drawn on top (0 = unchecked, the default);
  distractors: up to this many saturated non-object marks (rings, zigzags, arcs) drawn on the
    background in object colours (0 = none, the default); clutter > 1 strengthens the muted
    background clutter (noise, lines, blobs).
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
SPLIT_IDS = {"train": 0, "val": 1, "validation": 1, "test": 2, "eval": 1}
MIN_SIDE, MAX_SIDE = 0.2, 0.5  # object size as a fraction of the image side
MAX_OVERLAP_IOU = 0.3
# generate_example's settings and their defaults (the easy task); data.shapes has the same names.
DEFAULT_SETTINGS = dict(min_objects=1, max_objects=4, clutter=1.0, min_side=MIN_SIDE, max_side=MAX_SIDE,
                        side_distribution="uniform", min_aspect=0.6, max_aspect=1.6, max_extent=0.7,
                        max_overlap_iou=MAX_OVERLAP_IOU, min_visible=0.0, distractors=0)


def generator_kwargs(shapes_cfg) -> dict:
    """``generate_example`` keyword arguments from a ``data.shapes`` section (missing: defaults)."""
    kwargs = dict(seed=int(shapes_cfg.get("seed", 0)), image_size=int(shapes_cfg.get("image_size", 160)))
    for name, default in DEFAULT_SETTINGS.items():
        kwargs[name] = type(default)(shapes_cfg.get(name, default))
    return kwargs


def _split_id(split: str) -> int:
    if split not in SPLIT_IDS:
        raise ValueError(f"shapes: unknown split {split!r}; expected one of {sorted(SPLIT_IDS)}")
    return SPLIT_IDS[split]


def _background(rng: np.random.Generator, size: int, clutter: float) -> Image.Image:
    """Muted (low-saturation) background: gradient, noise, thin lines and small blobs."""
    base = rng.uniform(60, 200, size=3)
    if clutter <= 0:
        return Image.fromarray(np.full((size, size, 3), np.rint(base), np.uint8))
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    direction = rng.uniform(-30, 30, size=(2, 3)).astype(np.float32) * clutter
    rows = base.astype(np.float32) + ramp[:, None] * direction[0]  # [S, 3]
    cols = ramp[:, None] * direction[1]  # [S, 3]
    noise = rng.standard_normal(size=(size, size), dtype=np.float32) * (6.0 * clutter)
    pixels = rows[:, None, :] + cols[None, :, :] + noise[:, :, None]
    np.clip(pixels, 0, 255, out=pixels)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 1 + round(8 * clutter)))):
        grey = int(rng.uniform(40, 220))
        tint = rng.uniform(-20, 20, size=3)
        colour = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
        if rng.random() < 0.6:
            x0, y0, x1, y1 = rng.uniform(0, size, size=4)
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 3)))
        else:
            cx, cy = rng.uniform(0, size, size=2)
            r = rng.uniform(1, 0.04 * size)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    return image


def _draw_distractors(rng: np.random.Generator, image: Image.Image, count: int) -> None:
    """Up to ``count`` saturated marks that are not objects: rings, zigzag lines and arcs."""
    size = image.size[0]
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, count + 1))):
        colour = _object_colour(rng)
        kind = int(rng.integers(3))
        cx, cy = rng.uniform(0, size, size=2)
        r = rng.uniform(0.04, 0.25) * size
        width = max(1, round(rng.uniform(0.01, 0.03) * size))
        if kind == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=width)
        elif kind == 1:
            n = int(rng.integers(3, 7))
            pts = [(cx + rng.uniform(-r, r), cy + rng.uniform(-r, r)) for _ in range(n)]
            draw.line(pts, fill=colour, width=width)
        else:
            start = rng.uniform(0, 360)
            draw.arc([cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(60, 240), fill=colour,
                     width=width)


def _object_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.65, 1.0), rng.uniform(0.55, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _draw_shape(draw: ImageDraw.ImageDraw, kind: int, x0, y0, x1, y1, rng) -> None:
    w, h = x1 - x0, y1 - y0
    if kind == 0:
        draw.ellipse([x0, y0, x1, y1], fill=255)
    elif kind == 1:
        draw.rectangle([x0, y0, x1, y1], fill=255)
    elif kind == 2:
        apex = x0 + rng.uniform(0.2, 0.8) * w
        if rng.random() < 0.5:
            draw.polygon([(x0, y1), (x1, y1), (apex, y0)], fill=255)
        else:
            draw.polygon([(x0, y0), (x1, y0), (apex, y1)], fill=255)
    else:
        tx, ty = 0.17 * w, 0.17 * h
        cx, cy = x0 + w / 2, y0 + h / 2
        draw.rectangle([cx - tx, y0, cx + tx, y1], fill=255)
        draw.rectangle([x0, cy - ty, x1, cy + ty], fill=255)


def _iou(box, boxes) -> np.ndarray:
    if not boxes:
        return np.zeros(0)
    b = np.asarray(boxes)
    iw = np.clip(np.minimum(box[2], b[:, 2]) - np.maximum(box[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], b[:, 3]) - np.maximum(box[1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / union


def generate_example(index: int, split: str = "train", seed: int = 0, image_size: int = 160,
                     min_objects: int = 1, max_objects: int = 4, clutter: float = 1.0,
                     min_side: float = MIN_SIDE, max_side: float = MAX_SIDE, side_distribution: str = "uniform",
                     min_aspect: float = 0.6, max_aspect: float = 1.6, max_extent: float = 0.7,
                     max_overlap_iou: float = MAX_OVERLAP_IOU, min_visible: float = 0.0, distractors: int = 0):
    """One example: (image uint8 [S,S,3], boxes float32 [n,4] corners in [0,1], labels int32 [n]).

    Objects are drawn in the order of the returned arrays (later ones on top). The settings after
    ``clutter`` are described in the module docstring; their defaults give the easy task.
    """
    if side_distribution not in ("uniform", "log"):
        raise ValueError(f"shapes: side_distribution must be 'uniform' or 'log', got {side_distribution!r}")
    if not 0 < min_side <= max_side or not 0 < min_aspect <= max_aspect:
        raise ValueError(f"shapes: need 0 < min_side <= max_side and 0 < min_aspect <= max_aspect, got "
                         f"sides ({min_side}, {max_side}), aspects ({min_aspect}, {max_aspect})")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _split_id(split), int(index)])
    size = int(image_size)
    image = _background(rng, size, clutter)
    if distractors > 0:
        _draw_distractors(rng, image, int(distractors))
    wanted = int(rng.integers(min_objects, max_objects + 1))
    boxes, labels = [], []
    owner = np.full((size, size), -1, np.int32) if min_visible > 0 else None  # top object per pixel
    areas = []
    for _ in range(20 * wanted):
        if len(boxes) == wanted:
            break
        if side_distribution == "log":
            side = np.exp(rng.uniform(np.log(min_side), np.log(max_side))) * size
        else:
            side = rng.uniform(min_side, max_side) * size
        aspect = np.exp(rng.uniform(np.log(min_aspect), np.log(max_aspect)))
        w = min(side * np.sqrt(aspect), max_extent * size)
        h = min(side / np.sqrt(aspect), max_extent * size)
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        kind = int(rng.integers(len(SHAPE_CLASSES)))
        mask_image = Image.new("L", (size, size), 0)
        _draw_shape(ImageDraw.Draw(mask_image), kind, x0, y0, x0 + w, y0 + h, rng)
        mask = np.asarray(mask_image) > 0
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:  # too thin to draw a pixel
            continue
        box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32) / size
        if np.any(_iou(box, boxes) > max_overlap_iou):
            continue
        if owner is not None:
            covered = np.bincount(owner[mask & (owner >= 0)], minlength=len(boxes))
            visible = np.bincount(owner[owner >= 0], minlength=len(boxes)) - covered
            if np.any(visible < min_visible * np.asarray(areas)):
                continue
            owner[mask] = len(boxes)
            areas.append(int(mask.sum()))
        image.paste(_object_colour(rng), mask=mask_image)
        boxes.append(box)
        labels.append(kind + 1)
    return (np.asarray(image, np.uint8), np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(labels, np.int32))
