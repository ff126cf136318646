"""The paper's recipe: SSD300 (VGG16) on VOC2007+2012 trainval, evaluated on VOC2007 test.

    python -m ssd_jax.train --config ssd300_voc0712 --workdir runs/ssd300_voc0712 \
        --config.init_from=<workdir with the ImageNet VGG16 base, see the README>

Batch 32, SGD momentum 0.9, weight decay 5e-4, lr 1e-3 decayed x0.1 at 80k and 100k, 120k steps;
conv1_1 .. conv2_2 stay as initialised (frozen, as in the Caffe release).
Expected: VOC07 11-point mAP 77.2 (paper's SSD300*, with zoom-out augmentation) from an ImageNet base.
"""

from ssd_jax.configs._base import CAFFE_VGG16_FROZEN, base_config


def get_config():
    c = base_config()
    c.data.source = "tfds"
    c.data.tfds_name = "voc/2007+voc/2012"
    c.data.train_split = "train+validation"
    c.data.eval_split = "test"
    c.data.max_boxes = 50
    c.optimizer.frozen = CAFFE_VGG16_FROZEN
    c.eval.every = 10_000
    return c
