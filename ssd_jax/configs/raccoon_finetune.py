"""``raccoon`` fine-tuned from ``shapes_pretrain``: the fast recipe for a small dataset with no
downloaded weights (issue 18, part 4).

    python -m ssd_jax.train --config shapes_pretrain --workdir runs/shapes_pretrain
    python -m ssd_jax.train --config raccoon_finetune --workdir runs/raccoon_finetune \\
        [--config.init_from=runs/shapes_pretrain] [--config.data.root=path/to/voc_folder]

Everything else is ``raccoon``'s but copy-paste and mosaics, off as in the runs below (any VOC folder through
``data.root``; keep ``image_size`` equal to the pretraining's, so the BatchNorm statistics and default
boxes are the ones it learned). Fine-tuning copies every array except the class heads, whose class
count differs. Since ``raccoon`` itself moved to 1400 steps with copy-paste and mosaics (0.717-0.808 in 8-9
min), pretraining no longer buys time on the raccoon set; this config is kept as measured.

Measured on the raccoon set (2-core AMD EPYC shared with other jobs, load 3-30, so times are CPU
seconds / 2, start-up, compilation and evaluations included): pretraining 3.4 min (408 CPU s), this
config 4.0 min (474 CPU s), 7.4 min in all; VOC07 mAP@0.5 0.756 on the 40 val photos (0.757 at step
400), COCO AP 0.374. The same fine-tuning with weight decay 1e-4 from an earlier pretraining checkpoint
gave 0.779; on 40 photos (44 boxes) one recipe spreads by about +-0.03. ``raccoon`` from scratch reaches
0.747 in about 23 min: pretraining buys time, not a higher plateau. The target of issue 18 (0.85 within
15 min) is not reached. Runs: ``experiments/raccoon_recipe.md``.
"""

from ssd_jax.configs import raccoon


def get_config():
    c = raccoon.get_config()
    c.init_from = "runs/shapes_pretrain"
    c.num_steps = 800
    c.data.augment.paste_prob = 0.0  # as measured (raccoon's copy-paste came later; with it, 1200 steps: 0.795)
    c.data.augment.mosaic_prob = 0.0  # as measured (raccoon's mosaics came later still)
    c.optimizer.weight_decay = 0.05
    c.optimizer.warmup_steps = 100
    c.eval.every = 400
    c.checkpoint_every = 400
    return c
