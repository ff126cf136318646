"""SSD512 (VGG16) on VOC2007+2012 trainval, the paper's recipe at 512 px.

    python -m ssd_jax.train --config ssd512_voc0712 --workdir runs/ssd512_voc0712

Expected: VOC07 11-point mAP 79.8 (paper's SSD512*) from an ImageNet base.
"""

from ssd_jax.configs import ssd300_voc0712


def get_config():
    c = ssd300_voc0712.get_config()
    c.model = "ssd512_vgg16"
    return c
