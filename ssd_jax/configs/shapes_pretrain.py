"""Pretraining ``ssd_tiny`` on generated shapes sized like photo datasets' objects, as the
starting point of a small from-scratch dataset (``raccoon``; no downloaded weights).

    python -m ssd_jax.train --config shapes_pretrain --workdir runs/shapes_pretrain
    python -m ssd_jax.train --config raccoon_finetune --workdir runs/raccoon_finetune \
        --config.init_from=runs/shapes_pretrain

The task (``data.shapes.*``, see ``ssd_jax.data.shapes``): 1-3 objects per image, sides
0.25-0.95 of the image (the raccoon set's objects span 0.35-0.93, median 0.70, from
``python -m ssd_jax.diagnose --config raccoon``), width/height 0.5-2, strong clutter and
distractor marks, at the fine-tuning input size (160 px) so the BatchNorm statistics and the
default boxes are the fine-tuning run's. Fine-tuning copies every array (the box-regression
heads included) except the class heads, whose class count differs (``config.init_from``).
Measured (2-core AMD EPYC shared with other jobs): 408 CPU s, so about 3.4 min on an idle
2-core CPU, start-up and evaluation included; VOC07 mAP@0.5 0.814 on its 100 generated val
images (the run was resumed once, at step 191, from a 1200-step schedule). What it buys the
fine-tuning: ``ssd_jax/configs/raccoon_finetune.py`` and ``experiments/raccoon_recipe.md``.
"""

from ssd_jax.configs._base import base_config


def get_config():
    c = base_config()
    c.model = "ssd_tiny"
    c.model_options.source_convs = True
    c.model_options.width = 1.0  # channel multiplier (models/tiny.py)
    c.image_size = 160
    c.batch_size = 32
    c.num_steps = 600
    c.data.source = "shapes"
    c.data.max_boxes = 4
    c.data.augment.expand = False
    c.data.augment.crop = False
    s = c.data.shapes
    s.num_train = 4000
    s.num_eval = 100
    s.image_size = 160
    s.min_objects = 1
    s.max_objects = 3
    s.min_side = 0.25
    s.max_side = 0.95
    s.min_aspect = 0.5
    s.max_aspect = 2.0
    s.max_extent = 0.95
    s.max_overlap_iou = 0.3
    s.clutter = 1.5
    s.distractors = 3
    c.optimizer.name = "adamw"
    c.optimizer.lr = 3e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.eval.every = 0
    c.eval.batch_size = 50
    c.eval.with_coco = False
    c.eval.num_sample_images = 4
    c.postprocess.max_detections = 50
    c.log_every = 100
    c.checkpoint_every = 300
    return c
