"""Until ``ssd_jax/data/sources.py`` forwards every ``data.shapes.*`` setting to the generator,
:func:`forward_shapes_settings` makes ``ShapesSource.generate`` do so (a no-op once it does).

The permanent fix is one call in ``ShapesSource.generate``::

    example = shapes.generate_example(index, split, **shapes.generator_kwargs(c))

After it lands, this module can go (the ablation runner calls it only as a safety net).
"""

from __future__ import annotations

import numpy as np


def _probe_config():
    import ml_collections

    from ssd_jax.data import shapes

    return ml_collections.ConfigDict(dict(
        num_train=1, num_eval=1, image_size=48, seed=0,
        **{**shapes.DEFAULT_SETTINGS, "min_side": 0.1, "max_side": 0.9, "distractors": 3, "clutter": 2.0}))


def original_generate():
    """``ShapesSource.generate`` as data/sources.py defines it (before any patch of this module)."""
    from ssd_jax.data import sources

    generate = sources.ShapesSource.generate
    return getattr(generate, "_compat_original", generate)


def shapes_settings_forwarded(generate=None) -> bool:
    """Whether the data pipeline's shapes source (or ``generate``, a ``ShapesSource.generate``
    function) passes all ``data.shapes.*`` settings through."""
    from ssd_jax.data import shapes, sources

    cfg = _probe_config()
    source = sources.ShapesSource(cfg)
    got = (generate or type(source).generate)(source, "train", 0)
    want = shapes.generate_example(0, "train", **shapes.generator_kwargs(cfg))
    return all(np.array_equal(a, b) for a, b in zip(got, want))


def forward_shapes_settings() -> bool:
    """Patches ``ShapesSource.generate`` when needed; returns True when it patched."""
    from ssd_jax.data import shapes, sources

    if shapes_settings_forwarded():
        return False

    def generate(self, split: str, index: int):
        key = (split, index)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        example = shapes.generate_example(index, split, **shapes.generator_kwargs(self.cfg))
        if self._cache is not None:
            self._cache[key] = example
        return example

    generate._compat_original = sources.ShapesSource.generate
    sources.ShapesSource.generate = generate
    return True
