"""``ssd_tiny`` trained from scratch on a Pascal-VOC folder: the raccoon set (160 train / 40 val).

    python -m ssd_jax.train --config raccoon --workdir runs/raccoon [--config.data.root=path/to/voc_folder]

This is the config for your own VOC folder (Annotations/, JPEGImages/, ImageSets/Main/{train,val}.txt):
class names come from its XML files and ``max_boxes`` from its training split, so only ``data.root``
(and, if wanted, ``image_size``) needs changing. ``python -m ssd_jax.diagnose --config raccoon`` shows
whether the default boxes fit the data (on the raccoon set they cover 99.4% of the boxes).

Measured from scratch: VOC07 mAP@0.5 0.747 on the 40 val photos after 3000 steps (0.798 at step 2000,
kept as the best checkpoint), COCO AP 0.388; about 23 minutes on an idle 2-core CPU (earlier, slower
machine; those runs padded ground truth to an explicit ``max_boxes=20``, which changes no number).

Faster, same accuracy: pretrain on generated shapes, then fine-tune (``raccoon_finetune``): 7.4 min
of training in all, mAP 0.756-0.779. Runs and what each change bought: ``experiments/raccoon_recipe.md``.
"""

from ssd_jax.configs._base import base_config


def get_config():
    c = base_config()
    c.model = "ssd_tiny"
    c.model_options.source_convs = True  # the stride-1 3x3 conv on each source stage
    c.model_options.width = 1.0  # channel multiplier (models/tiny.py)
    c.image_size = 160
    c.batch_size = 32
    c.num_steps = 3000
    c.data.source = "voc_folder"
    c.data.root = "../shared/data/raccoon"
    c.data.train_split = "train"
    c.data.eval_split = "val"
    c.data.max_boxes = 0  # from the training split (3 on the raccoon set; padding only, after augmentation)
    c.optimizer.name = "adamw"
    c.optimizer.lr = 2e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 200
    c.eval.every = 1000
    c.eval.batch_size = 40
    c.checkpoint_every = 1000
    return c
