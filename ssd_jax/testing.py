"""Synthetic inputs for tests and offline demos (no downloads, no PyTorch).

    state_dict = synthetic_state_dict("ssd_pytorch", 21)   # random weights, ssd.pytorch's keys and shapes
    params = convert.from_ssd_pytorch(state_dict)

Needs only NumPy at import time.
"""

from __future__ import annotations

import numpy as np

from ssd_jax import convert_layouts

_FIRST_CONV = {"torchvision_ssd300": "backbone.features.0.weight", "ssd_pytorch": "vgg.0.weight",
               "vgg16_reducedfc": "0.weight", "vgg16_imagenet": "features.0.weight"}


def synthetic_state_dict(source: str, num_classes: int | None = None, seed: int = 0) -> dict:
    """Deterministic random state dict ``{torch key: float32 ndarray}`` in ``source``'s layout.

    Tensor ``i`` of :func:`ssd_jax.convert_layouts.expected_shapes` is
    ``default_rng([seed, i]).standard_normal(shape)`` times a scale that keeps activations O(1)
    for 0..255 "caffe" inputs: weights
    ``sqrt(2 / fan_in)`` (first conv also / 64, heads ``0.5 / sqrt(fan_in)``), biases 0.1,
    L2Norm scales ``20 + standard_normal``. The fixture script and the tests both call this,
    so fixtures store only inputs and outputs.
    """
    out = {}
    for i, (name, shape) in enumerate(convert_layouts.expected_shapes(source, num_classes).items()):
        x = np.random.default_rng([seed, i]).standard_normal(shape)
        if len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            scale = np.sqrt(2.0 / fan_in)
            if name == _FIRST_CONV[source]:
                scale /= 64.0
            if name.startswith(("head.", "loc.", "conf.")):
                scale = 0.5 / np.sqrt(fan_in)
            x = x * scale
        elif name.endswith(".bias"):
            x = x * 0.1
        else:
            x = 20.0 + x
        out[name] = x.astype(np.float32)
    return out

