"""Detection data for ssd_jax: sources, SSD augmentation, fixed-shape input pipelines.

Conventions: images RGB; boxes corners ``(xmin, ymin, xmax, ymax)`` normalised to [0, 1];
label 0 is background, objects 1..C-1; training ground truth padded to ``max_boxes`` with a mask,
evaluation ground truth padded (never truncated) to the eval split's largest box count.

TensorFlow (CPU only) is imported lazily, on the first call that needs it, so
``normalize``/``denormalize``/``default_config`` stay cheap.
"""

from __future__ import annotations

from ssd_jax.data.config import default_config
from ssd_jax.data.normalize import denormalize, normalize
from ssd_jax.data.records import DatasetInfo


def dataset_info(cfg) -> DatasetInfo:
    """See ``pipeline.dataset_info``."""
    from ssd_jax.data import pipeline
    return pipeline.dataset_info(cfg)


def train_iterator(cfg, image_size, batch_size, normalization="caffe", seed=0, start_step=0,
                   process_index=0, process_count=1):
    """See ``pipeline.train_iterator``."""
    from ssd_jax.data import pipeline
    return pipeline.train_iterator(cfg, image_size, batch_size, normalization, seed, start_step,
                                   process_index, process_count)


def eval_iterator(cfg, image_size, batch_size, normalization="caffe", process_index=0, process_count=1):
    """See ``pipeline.eval_iterator``."""
    from ssd_jax.data import pipeline
    return pipeline.eval_iterator(cfg, image_size, batch_size, normalization, process_index, process_count)


def eval_box_count(cfg) -> int:
    """See ``pipeline.eval_box_count``."""
    from ssd_jax.data import pipeline
    return pipeline.eval_box_count(cfg)


def num_eval_batches(cfg, batch_size, process_count=1) -> int:
    """See ``pipeline.num_eval_batches``."""
    from ssd_jax.data import pipeline
    return pipeline.num_eval_batches(cfg, batch_size, process_count)


def preview_grid(cfg, path, image_size=(300, 300), num_images=16, seed=0, columns=4, split="train"):
    """See ``preview.preview_grid``."""
    from ssd_jax.data import preview
    return preview.preview_grid(cfg, path, image_size, num_images, seed, columns, split)


__all__ = ["DatasetInfo", "dataset_info", "default_config", "denormalize", "eval_box_count", "eval_iterator",
           "normalize", "num_eval_batches", "preview_grid", "train_iterator"]
