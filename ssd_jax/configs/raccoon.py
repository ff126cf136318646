"""``ssd_tiny`` on a Pascal-VOC folder, starting from ``shapes_pretrain``: the recipe for your own
small dataset (no downloaded weights). The default folder is the raccoon set (160 train / 40 val).

    python -m ssd_jax.train --config shapes_pretrain --workdir runs/shapes_pretrain
    python -m ssd_jax.train --config raccoon --workdir runs/raccoon \
        --config.init_from=runs/shapes_pretrain [--config.data.root=path/to/voc_folder]

Any VOC folder (Annotations/, JPEGImages/, ImageSets/Main/{train,val}.txt) works without other
edits: class names come from its XML files, ``max_boxes`` from its training split; ``image_size``
may be changed (use the same for the pretraining). ``python -m ssd_jax.diagnose --config raccoon``
shows whether the default boxes fit the data (on the raccoon set they cover 99.4% of the boxes).

Measured on the raccoon set (2-core AMD EPYC shared with other jobs, load 3-30, so times are CPU
seconds / 2, start-up, compilation and evaluations included): the pretraining 3.4 min (408 CPU s),
this config 4.0 min (474 CPU s), 7.4 min in all; VOC07 mAP@0.5 0.756 on the 40 val photos
(0.757 at step 400), COCO AP 0.374. Two variants of the same fine-tuning from earlier pretraining
checkpoints gave 0.779 and 0.766 (0.793 at step 400): on 40 photos (44 boxes) the spread of one
recipe is about +-0.03. The target of issue 18 (0.85 within 15 min) is not reached.

Without ``init_from`` the same 800 steps start from random weights; the from-scratch recipe of
before (3000 steps, weight decay 1e-4) reached 0.747 (best 0.798 at step 2000) in about 23 min.
Runs and what each change bought: ``experiments/raccoon_recipe.md``.
"""

from ssd_jax.configs._base import base_config


def get_config():
    c = base_config()
    c.model = "ssd_tiny"
    c.model_options.source_convs = True  # the stride-1 3x3 conv on each source stage
    c.image_size = 160
    c.batch_size = 32
    c.num_steps = 800
    c.init_from = ""  # the recipe: runs/shapes_pretrain (see above)
    c.data.source = "voc_folder"
    c.data.root = "../shared/data/raccoon"
    c.data.train_split = "train"
    c.data.eval_split = "val"
    c.data.max_boxes = 0  # from the training split (3 on the raccoon set; padding only, after augmentation)
    c.optimizer.name = "adamw"
    c.optimizer.lr = 2e-3
    c.optimizer.weight_decay = 0.05
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.eval.every = 400
    c.eval.batch_size = 40
    c.checkpoint_every = 400
    return c
