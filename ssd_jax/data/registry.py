"""The source a data config describes: ``get_source(cfg)``, built once per distinct config.

Sources: "shapes" (``sources.ShapesSource``), "voc_folder" and "coco_json" (``sources.FileSource``
over the records of ``voc_folder`` / ``coco_json``), "tfds" (``tfds_sources.TfdsSource``, imported
only when used: TensorFlow Datasets is slow to import).
"""

from __future__ import annotations

import functools

from ssd_jax.data import coco_json, shapes, voc_folder
from ssd_jax.data.examples import with_background
from ssd_jax.data.sources import FileSource, ShapesSource


def _object_names(cfg):
    return tuple(cfg.class_names) if cfg.get("class_names") else None


def _splits(cfg) -> list[str]:
    return list(dict.fromkeys([cfg.train_split, cfg.eval_split]))


def _voc_folder(cfg) -> FileSource:
    if not cfg.root:
        raise ValueError("voc_folder: set data.root to the VOC-layout folder")
    names = _object_names(cfg) or voc_folder.class_names_in(cfg.root, _splits(cfg), cfg.strict)
    class_names = with_background(names)
    return FileSource(class_names, {s: voc_folder.load_split(cfg.root, s, class_names, cfg.strict)
                                    for s in _splits(cfg)})


def _coco_json(cfg) -> FileSource:
    if not cfg.annotations:
        raise ValueError("coco_json: set data.annotations to the COCO JSON file")
    train_json, _ = coco_json.split_paths(cfg, cfg.train_split)
    class_names = with_background(_object_names(cfg) or coco_json.class_names_in(train_json))
    split_records = {}
    for split in _splits(cfg):
        ann, root = coco_json.split_paths(cfg, split)
        split_records[split] = coco_json.load_split(ann, root, class_names, cfg.strict,
                                                    training=(split == cfg.train_split))
    return FileSource(class_names, split_records)


def _shapes(cfg) -> ShapesSource:
    source = ShapesSource(cfg.shapes)
    if _object_names(cfg) and with_background(_object_names(cfg)) != source.class_names:
        raise ValueError(f"shapes: class_names must be {shapes.SHAPE_CLASSES}, got {tuple(cfg.class_names)}")
    return source


def _cache_key(cfg) -> str:
    return cfg.to_json(sort_keys=True)


@functools.lru_cache(maxsize=8)
def _cached_source(key: str, cfg_holder):
    cfg = cfg_holder.cfg
    if cfg.source == "shapes":
        return _shapes(cfg)
    if cfg.source == "voc_folder":
        return _voc_folder(cfg)
    if cfg.source == "coco_json":
        return _coco_json(cfg)
    if cfg.source == "tfds":
        from ssd_jax.data import tfds_sources  # lazy: a leaf import (tfds_sources never imports registry)
        return tfds_sources.TfdsSource(cfg)
    raise ValueError(f"unknown data source {cfg.source!r}; expected shapes, voc_folder, coco_json or tfds")


class _Holder:
    """Carries a config into the cache without making it part of the key."""

    def __init__(self, key, cfg):
        self.key, self.cfg = key, cfg

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Holder) and self.key == other.key


def get_source(cfg):
    """The source described by the data config (scanned once per distinct config)."""
    key = _cache_key(cfg)
    return _cached_source(key, _Holder(key, cfg))
