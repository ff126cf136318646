"""Drawing detections and ground truth on images (PIL), shared by training samples and the CLI.

Boxes are corners ``(xmin, ymin, xmax, ymax)`` normalised to [0, 1]; images are uint8 RGB
[H, W, 3]. Each class gets a fixed, distinct colour (golden-ratio hue spacing).
"""

from __future__ import annotations

import colorsys
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, saturated RGB colour for class ``label`` (stable across calls)."""
    hue = (0.13 + 0.618033988749895 * int(label)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without sized default fonts
        return ImageFont.load_default()


def draw_boxes(image, boxes, labels, scores=None, class_names=None, line_width=None, min_score=0.0):
    """Draw labelled boxes on a copy of ``image``.

    Args:
      image: uint8 [H, W, 3] RGB (grayscale [H, W] is accepted and converted).
      boxes: [N, 4] corners in [0, 1].
      labels: [N] ints (class indices; 0 = background is drawn too if passed).
      scores: optional [N] floats, appended to the caption and used with ``min_score``.
      class_names: optional sequence indexed by label; otherwise the number is shown.
    Returns:
      uint8 [H, W, 3] image with boxes and captions (text on a filled box for legibility).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    canvas = Image.fromarray(np.ascontiguousarray(image.astype(np.uint8)))
    draw = ImageDraw.Draw(canvas)
    height, width = image.shape[:2]
    line_width = line_width or max(1, round(min(height, width) / 150))
    font = _font(max(10, round(min(height, width) / 28)))
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        if scores is not None and scores[i] < min_score:
            continue
        # Pixel-edge corners rounded to whole pixels (PIL truncates floats: 0.9 * 100 in float32 is 89.99...).
        x0, y0, x1, y1 = np.rint(np.clip(box, 0.0, 1.0).astype(np.float64) * [width, height, width, height]).astype(int)
        colour = class_colour(int(label))
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=line_width)
        known = class_names is not None and 0 <= int(label) < len(class_names)
        name = class_names[int(label)] if known else str(int(label))
        caption = name if scores is None else f"{name} {float(scores[i]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_w, text_h = right - left, bottom - top
        ty = y0 - text_h - 2 if y0 - text_h - 2 >= 0 else y0
        tx = min(x0, max(0, width - text_w - 2))
        draw.rectangle([tx, ty, tx + text_w + 2, ty + text_h + 2], fill=colour)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text((tx + 1 - left, ty + 1 - top), caption, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255),
                  font=font)
    return np.asarray(canvas)


def save_grid(images, path, columns=None, padding=2, background=(255, 255, 255)):
    """Tile uint8 images [N, H, W, 3] (or a list of equally sized images) into a PNG at ``path``.

    Returns the grid as uint8 [rows*(H+p)+p, cols*(W+p)+p, 3].
    """
    images = [np.asarray(im, np.uint8) for im in images]
    if not images:
        raise ValueError("save_grid: no images")
    height, width = images[0].shape[:2]
    if any(im.shape[:2] != (height, width) for im in images):
        raise ValueError("save_grid: images must have the same size")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    grid = np.empty((rows * (height + padding) + padding, columns * (width + padding) + padding, 3), np.uint8)
    grid[:] = background
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        y, x = padding + r * (height + padding), padding + c * (width + padding)
        grid[y:y + height, x:x + width] = im if im.ndim == 3 else im[:, :, None]
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    Image.fromarray(grid).save(path)
    return grid
