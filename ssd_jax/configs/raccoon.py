"""``ssd_tiny`` trained from scratch on a Pascal-VOC folder: the raccoon set (160 train / 40 val).

    python -m ssd_jax.train --config raccoon --workdir runs/raccoon [--config.data.root=path/to/voc_folder]

This is the config for your own VOC folder (Annotations/, JPEGImages/, ImageSets/Main/{train,val}.txt):
class names come from its XML files and ``max_boxes`` from its training split, so only ``data.root``
(and, if wanted, ``image_size``) needs changing. ``python -m ssd_jax.diagnose --config raccoon`` shows
whether the default boxes fit the data (on the raccoon set they cover 99.4% of the boxes).

Measured from scratch (this config: 1400 steps, copy-paste 0.7, two-photo mosaics on half the examples;
2-core AMD EPYC, 2026-12-03): VOC07 mAP@0.5 0.792 / 0.777 / 0.802 / 0.808 / 0.717 on the 40 val photos
(seeds 0-4, mean 0.779 ± 0.037; COCO AP 0.369-0.401); seeds 3 and 4 on two idle cores: 8m08s and 8m45s of
training, 8m21s and 8m59s for the whole command. Without the mosaics (the session-26 recipe) seeds 0-3 gave
0.740 / 0.771 / 0.789 / 0.778 (0.769 ± 0.021): higher for each of seeds 0-3 with mosaics, no measurable
difference overall. ``model_options.width=2`` (0.830 / 0.777 / 0.703, 2.2x the time per step), a 224 px input
(0.769 / 0.707), 2000 steps (0.787) and pretraining on shapes (``raccoon_finetune``: 0.756-0.795) land on
the same plateau; on 40 photos one run's final mAP varies with the seed (std 0.021-0.064 over these
recipes). The target of issue 18 (0.85) is not reached; the lever that moves it is data (40 / 80 / 160
training photos: 0.660 / 0.700 / 0.767 with copy-paste alone). Runs: ``experiments/raccoon_recipe.md``.
"""

from ssd_jax.configs._base import base_config


def get_config():
    c = base_config()
    c.model = "ssd_tiny"
    c.model_options.source_convs = True  # the stride-1 3x3 conv on each source stage
    c.model_options.width = 1.0  # channel multiplier (models/tiny.py)
    c.image_size = 160
    c.batch_size = 32
    c.num_steps = 1400
    c.data.source = "voc_folder"
    c.data.root = "../shared/data/raccoon"
    c.data.train_split = "train"
    c.data.eval_split = "val"
    c.data.max_boxes = 0  # from the training split (3 on the raccoon set; padding only, after augmentation)
    c.data.augment.paste_prob = 0.7  # objects of other photos pasted beside this photo's (data/copy_paste.py)
    c.data.augment.mosaic_prob = 0.5  # half the examples: two photos side by side or stacked (data/mosaic.py)
    c.data.augment.mosaic_tiles = 2
    c.optimizer.name = "adamw"
    c.optimizer.lr = 2e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 200
    c.eval.every = 350
    c.eval.batch_size = 40
    c.checkpoint_every = 350
    return c
