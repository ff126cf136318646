"""SSDLite320 with a MobileNetV2 base on COCO train2017 (the "lighter base network").

    python -m ssd_jax.train --config ssdlite320_mobilenet_v2_coco --workdir runs/ssdlite_coco

Cosine schedule with warm-up and a large batch, as torchvision trains its ssdlite models.
Expected: COCO AP about 21 (torchvision ssdlite320_mobilenet_v3_large: 21.3; lufficc MobileNetV2 on VOC: 68.9).
"""

from ssd_jax.configs._base import base_config


def get_config():
    c = base_config()
    c.model = "ssdlite320_mobilenet_v2"
    c.data.source = "tfds"
    c.data.tfds_name = "coco/2017"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.max_boxes = 100
    c.batch_size = 256
    c.num_steps = 300_000
    c.optimizer.lr = 0.15
    c.optimizer.weight_decay = 4e-5
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 1000
    c.postprocess.max_detections = 100
    c.eval.every = 20_000
    return c
