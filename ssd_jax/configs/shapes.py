"""The default: the CPU-sized ``ssd_tiny`` trained from scratch on synthetic shapes.

    python -m ssd_jax.train --config shapes --workdir runs/shapes

Measured on an idle 2-core CPU (the README's speed machine): VOC07 mAP@0.5 0.910 (COCO AP 0.696)
on the shapes validation split after 3m50s of training (the project's target: >= 0.90 within
10 minutes); 0.906 after 7m18s on the slower machine of the first sessions.
"""

from ssd_jax.configs._base import base_config


def get_config():
    c = base_config()
    c.model = "ssd_tiny"
    c.model_options.source_convs = True  # the stride-1 3x3 conv on each source stage
    c.image_size = 128
    c.batch_size = 32
    c.num_steps = 1200
    c.data.source = "shapes"
    c.data.max_boxes = 8  # explicit, as measured above (derived it would be max_objects = 4)
    c.data.augment.expand = False
    c.data.augment.crop = False
    c.data.shapes.num_train = 4000
    c.data.shapes.num_eval = 200
    c.data.shapes.image_size = 128
    c.optimizer.name = "adamw"
    c.optimizer.lr = 3e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.eval.every = 600
    c.eval.batch_size = 50
    c.eval.with_coco = True
    c.postprocess.max_detections = 50
    c.log_every = 50
    c.checkpoint_every = 600
    return c
