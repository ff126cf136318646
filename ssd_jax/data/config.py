"""Default configuration of the data section (an ``ml_collections.ConfigDict``).

Fields (trainer configs override them):
  source: "shapes" | "voc_folder" | "coco_json" | "tfds".
  root: VOC-layout folder (voc_folder) or image folder (coco_json; may contain "{split}").
  annotations: COCO JSON path (coco_json; may contain "{split}", e.g. "ann/instances_{split}.json").
  tfds_name: e.g. "voc/2007", "coco/2017", or "voc/2007+voc/2012" (splits read from each, concatenated).
  tfds_data_dir: optional TFDS data_dir.
  train_split / eval_split: split names ("+"-joined allowed for voc_folder and tfds).
  class_names: optional tuple of object class names (without "background"); otherwise read from the data.
  max_boxes: boxes per training image after padding; extra boxes are dropped and counted in the logs.
    0 (default): derived from the training split (see ``ssd_jax.data.max_boxes``). Evaluation
    always keeps every box.
  strict: False skips bad files with a warning naming them; True raises.
  shuffle_buffer: shuffle buffer for stream sources (tfds); index sources use a full permutation.
  num_parallel_calls: parallelism of the tf.data maps and size of the pipeline's thread pool. -1
    (default): follow the host, a pool of one thread per usable core (affinity set, cgroup quota)
    with the maps' parallelism tuned by tf.data AUTOTUNE; N > 0: N threads, N parallel calls.
  augment: photometric / expand / crop / flip switches, expand_max_ratio; mosaic_prob (0 = off) and
    mosaic_tiles (2 or 4): several examples tiled into one image (``ssd_jax.data.mosaic``); paste_prob
    (0 = off): another image's object pasted next to one of this image's (``ssd_jax.data.copy_paste``).
  shapes: the synthetic generator (num_train, num_eval, image_size, min/max_objects, clutter, seed;
    harder-task settings min/max_side, side_distribution, min/max_aspect, max_extent, max_overlap_iou,
    min_visible, distractors: see ``ssd_jax.data.shapes``; the defaults give the easy task).
"""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """The data section with its defaults: the synthetic shapes task."""
    cfg = ml_collections.ConfigDict()
    cfg.source = "shapes"
    cfg.root = ""
    cfg.annotations = ""
    cfg.tfds_name = ""
    cfg.tfds_data_dir = ""
    cfg.train_split = "train"
    cfg.eval_split = "val"
    cfg.class_names = ml_collections.FieldReference(None, field_type=tuple)
    cfg.max_boxes = 0
    cfg.strict = False
    cfg.shuffle_buffer = 1000
    cfg.num_parallel_calls = -1
    cfg.augment = ml_collections.ConfigDict(
        dict(photometric=True, expand=True, crop=True, flip=True, expand_max_ratio=4.0, mosaic_prob=0.0,
             mosaic_tiles=4, paste_prob=0.0))
    cfg.shapes = ml_collections.ConfigDict(
        dict(num_train=2000, num_eval=200, image_size=160, min_objects=1, max_objects=4,
             clutter=1.0, seed=0,
             min_side=0.2, max_side=0.5, side_distribution="uniform", min_aspect=0.6, max_aspect=1.6,
             max_extent=0.7, max_overlap_iou=0.3, min_visible=0.0, distractors=0))
    return cfg
