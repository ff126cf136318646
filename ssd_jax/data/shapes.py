"""Synthetic detection task: coloured shapes on cluttered backgrounds, generated on the fly.

Example ``i`` of split ``split`` is a pure function of ``(seed, split, i)`` and the generator
settings. Boxes are corners ``(xmin, ymin, xmax, ymax)`` in [0, 1] with pixel-edge convention:
an object whose drawn pixels span columns ``c0..c1`` has ``xmin = c0 / W`` and ``xmax = (c1 + 1) / W``.
They are tight around the full drawn shape (shapes drawn later may partly cover earlier ones;
overlaps are limited to IoU <= 0.3 so every object stays recognisable).
Labels are 1..4 for ``SHAPE_CLASSES`` (0 is background).
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
SPLIT_IDS = {"train": 0, "val": 1, "validation": 1, "test": 2, "eval": 1}
MIN_SIDE, MAX_SIDE = 0.2, 0.5  # object size as a fraction of the image side
MAX_OVERLAP_IOU = 0.3


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
                     min_objects: int = 1, max_objects: int = 4, clutter: float = 1.0):
    """One example: (image uint8 [S,S,3], boxes float32 [n,4] corners in [0,1], labels int32 [n]).

    Objects are drawn in the order of the returned arrays (later ones on top).
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _split_id(split), int(index)])
    size = int(image_size)
    image = _background(rng, size, clutter)
    wanted = int(rng.integers(min_objects, max_objects + 1))
    boxes, labels = [], []
    for _ in range(20 * wanted):
        if len(boxes) == wanted:
            break
        side = rng.uniform(MIN_SIDE, MAX_SIDE) * size
        aspect = np.exp(rng.uniform(np.log(0.6), np.log(1.6)))
        w = min(side * np.sqrt(aspect), 0.7 * size)
        h = min(side / np.sqrt(aspect), 0.7 * size)
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        kind = int(rng.integers(len(SHAPE_CLASSES)))
        mask_image = Image.new("L", (size, size), 0)
        _draw_shape(ImageDraw.Draw(mask_image), kind, x0, y0, x0 + w, y0 + h, rng)
        mask = np.asarray(mask_image) > 0
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32) / size
        if np.any(_iou(box, boxes) > MAX_OVERLAP_IOU):
            continue
        image.paste(_object_colour(rng), mask=mask_image)
        boxes.append(box)
        labels.append(kind + 1)
    return (np.asarray(image, np.uint8), np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(labels, np.int32))
