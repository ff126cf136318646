"""A harder synthetic benchmark for ablations: ``ssd_tiny`` on ``shapes`` with small, large,
elongated, occluded objects and strong clutter (issue 19).

    python -m ssd_jax.train --config shapes_hard --workdir runs/shapes_hard
    python -m experiments.ablate --sweep design_choices --workdir runs/ablate_design --seeds 3

The task: objects 0.05-0.9 of the image side (log-uniform), width/height 1/3-3 (ellipses, bars,
stretched triangles and crosses), 2-8 objects per image overlapping up to IoU 0.5 (each keeps at
least half its pixels visible), stronger background clutter and up to 4 saturated distractor marks.
Same four classes as ``shapes``; deterministic and download-free.

MEASURED (filled in below).
"""

from ssd_jax.configs._base import base_config


def get_config():
    c = base_config()
    c.model = "ssd_tiny"
    c.image_size = 128
    c.batch_size = 32
    c.num_steps = 900
    c.data.source = "shapes"
    c.data.max_boxes = 12
    c.data.augment.expand = False
    c.data.augment.crop = False
    s = c.data.shapes
    s.num_train = 4000
    s.num_eval = 300
    s.image_size = 128
    s.min_objects = 2
    s.max_objects = 8
    s.min_side = 0.07
    s.max_side = 0.9
    s.side_distribution = "log"
    s.min_aspect = 1 / 3
    s.max_aspect = 3.0
    s.max_extent = 0.95
    s.max_overlap_iou = 0.5
    s.min_visible = 0.5
    s.clutter = 1.5
    s.distractors = 4
    c.optimizer.name = "adamw"
    c.optimizer.lr = 3e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.eval.every = 0
    c.eval.batch_size = 50
    c.eval.with_coco = True
    c.eval.num_sample_images = 8
    c.postprocess.max_detections = 100
    c.log_every = 50
    c.checkpoint_every = 300
    return c
