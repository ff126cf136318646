"""Images on the host: conversion to RGB uint8, the resize to the model input, file loading.

Conventions: images are RGB uint8 ``[H, W, 3]`` (grayscale ``[H, W]`` / ``[H, W, 1]`` and RGBA
are converted); pixel boxes are corners ``(xmin, ymin, xmax, ymax)`` in the input image's pixel
coordinates (continuous: the whole image is ``(0, 0, W, H)``); the network's boxes are the
same corners normalised to [0, 1].

The resize to the model input is PIL bilinear, a warp without aspect preservation as SSD
trains, so normalised boxes scale back to pixels by ``(W, H, W, H)``. PIL's bilinear filter
antialiases when shrinking, unlike the training pipeline's ``tf.image.crop_and_resize``; the
difference is small at typical photo-to-300 px ratios.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
from PIL import Image

# File loading (CLI): images are downscaled so that the longer side is at most MAX_SIDE before
# detection and drawing (the model input is at most 512 px); MAX_DECODE_PIXELS bounds what is
# decoded at full resolution (JPEG is decoded at a reduced scale with Image.draft first).
MAX_SIDE = 2048
MAX_DECODE_PIXELS = 150_000_000


def to_rgb_uint8(image) -> np.ndarray:
    """A PIL image or array -> uint8 RGB ``[H, W, 3]``.

    Accepts any PIL mode (converted to RGB, alpha dropped), and arrays ``[H, W]``, ``[H, W, 1]``
    (grayscale), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA, alpha dropped) of uint8, or of
    another integer type with values in 0..255. Floats are refused (their range is ambiguous).
    """
    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        pass
    elif array.ndim != 2:
        raise ValueError(f"expected an image [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty image of shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
            raise ValueError(f"expected uint8 pixels 0..255, got dtype {array.dtype} (scale and cast floats "
                             f"yourself, e.g. (x * 255).round().astype(np.uint8) for values in [0, 1])")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"integer image values must be in 0..255, got {array.min()}..{array.max()}")
        array = array.astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def resize_rgb(image: np.ndarray, size) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[h, w, 3]`` for ``size = (h, w)``, PIL bilinear (a warp)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def to_pixel_boxes(boxes, image_size) -> np.ndarray:
    """Normalised corners ``[..., 4]`` -> pixel corners of an image of ``(height, width)``.

    The model input is a warp of the whole image, so x scales by the width and y by the height.
    """
    height, width = image_size
    return np.asarray(boxes, np.float32) * np.asarray([width, height, width, height], np.float32)


@contextlib.contextmanager
def _no_pil_pixel_limit():
    """PIL refuses images above 2 x MAX_IMAGE_PIXELS; load_image applies its own limit instead."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def load_image(path: str, max_side: int = MAX_SIDE,
               max_decode_pixels: int = MAX_DECODE_PIXELS) -> tuple[np.ndarray, tuple]:
    """Reads an image file as uint8 RGB, downscaled so that its longer side is <= ``max_side``.

    Huge images are handled deliberately: JPEGs are decoded at a reduced scale
    (``Image.draft``); other formats are decoded in full only up to ``max_decode_pixels``.

    Returns:
      ``(image [h, w, 3] uint8, (height, width) of the file)``.
    Raises:
      ValueError: not an image, truncated or corrupt, or too large to decode; names the file.
    """
    try:
        with _no_pil_pixel_limit(), Image.open(path) as im:
            original = (im.height, im.width)
            if im.format == "JPEG" and max(original) > max_side:
                im.draft("RGB", (max_side, max_side))  # decodes at 1/2, 1/4 or 1/8 scale, >= the request
            if im.width * im.height > max_decode_pixels:
                raise ValueError(f"{path}: {original[1]}x{original[0]} image is too large to decode "
                                 f"(more than {max_decode_pixels} pixels)")
            im.load()
            if max(im.size) > max_side:
                im.thumbnail((max_side, max_side), Image.BILINEAR)
            return to_rgb_uint8(im), original
    except ValueError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:  # PIL reports bad files so
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
