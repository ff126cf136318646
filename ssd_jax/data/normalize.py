"""Pixel normalisation shared by the input pipeline and the Detector.

Images are RGB, pixel values 0..255 (uint8 or float). Modes:
  "caffe":    x - (123, 117, 104)                       (VGG/Caffe models; RGB order, no std)
  "imagenet": (x / 255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
  "unit":     x / 255
"""

from __future__ import annotations

import numpy as np

CAFFE_MEAN_RGB = (123.0, 117.0, 104.0)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
MODES = ("caffe", "imagenet", "unit")


def scale_and_offset(normalization: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale[3], offset[3]) such that normalised = x * scale + offset for x in 0..255."""
    if normalization == "caffe":
        return np.ones(3, np.float32), -np.asarray(CAFFE_MEAN_RGB, np.float32)
    if normalization == "imagenet":
        std = np.asarray(IMAGENET_STD_RGB, np.float32)
        return (1.0 / (255.0 * std)).astype(np.float32), (-np.asarray(IMAGENET_MEAN_RGB, np.float32) / std)
    if normalization == "unit":
        return np.full(3, 1.0 / 255.0, np.float32), np.zeros(3, np.float32)
    raise ValueError(f"unknown normalization {normalization!r}; expected one of {MODES}")


def fill_value_rgb(normalization: str) -> np.ndarray:
    """The 0..255 RGB value used to fill expanded canvases (the dataset mean, as in SSD)."""
    del normalization
    return np.asarray(CAFFE_MEAN_RGB, np.float32)


def normalize(images, normalization: str) -> np.ndarray:
    """RGB images [..., 3] in 0..255 (uint8 or float) -> float32 normalised."""
    scale, offset = scale_and_offset(normalization)
    return np.asarray(images, np.float32) * scale + offset


def denormalize(images, normalization: str) -> np.ndarray:
    """Inverse of ``normalize``: float32 [..., 3] -> uint8 RGB 0..255 (rounded, clipped)."""
    scale, offset = scale_and_offset(normalization)
    pixels = (np.asarray(images, np.float32) - offset) / scale
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
