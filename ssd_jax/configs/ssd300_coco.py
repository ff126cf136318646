"""SSD300 (VGG16) on COCO train2017, evaluated on val2017 (torchvision's ssd300_vgg16 setting).

    python -m ssd_jax.train --config ssd300_coco --workdir runs/ssd300_coco

Note: ``ssd300_vgg16`` uses the Caffe VOC default boxes (``anchors.SSD300_VOC``); torchvision's
COCO model uses the smaller COCO scales 0.07..1.05 (``anchors.SSD300_COCO``).
Expected: COCO AP 25.1 (torchvision), 25.1 test-dev (paper's SSD300*).
"""

from ssd_jax.configs._base import CAFFE_VGG16_FROZEN, base_config


def get_config():
    c = base_config()
    c.data.source = "tfds"
    c.data.tfds_name = "coco/2017"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.max_boxes = 100
    c.num_steps = 400_000
    c.optimizer.lr = 2e-3
    c.optimizer.boundaries = (280_000, 360_000)
    c.optimizer.warmup_steps = 1000
    c.optimizer.frozen = CAFFE_VGG16_FROZEN
    c.postprocess.max_detections = 100
    c.eval.every = 20_000
    return c
