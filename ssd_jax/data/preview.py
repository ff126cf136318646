"""Write a PNG grid of augmented training (or eval) samples with their boxes and class names.

    python -m ssd_jax.data.preview --out grid.png                      # the shapes config
    python -m ssd_jax.data.preview --config raccoon --config.data.root=path/to/voc --out grid.png
``--config`` names a training config (packaged name or file) as for ``python -m ssd_jax.train``, with
``--config.FIELD=VALUE`` overrides; its ``data`` section is drawn.
"""

from __future__ import annotations

import numpy as np

from ssd_jax import cli, visualize
from ssd_jax.data import pipeline
from ssd_jax.data.normalize import denormalize


def preview_grid(cfg, path, image_size=(300, 300), num_images=16, seed=0, columns=4, split="train"):
    """Draw ``num_images`` samples of ``split`` ("train": augmented, "eval": resized) to ``path``.

    Returns the grid image, uint8 [h, w, 3].
    """
    names = pipeline.dataset_info(cfg).class_names
    if split == "train":
        batch = next(pipeline.train_iterator(cfg, image_size, num_images, "unit", seed=seed))
    else:
        batch = next(pipeline.eval_iterator(cfg, image_size, num_images, "unit"))
    images = denormalize(batch["image"], "unit")
    drawn = [visualize.draw_boxes(images[i], batch["boxes"][i][batch["mask"][i]],
                                  batch["labels"][i][batch["mask"][i]], class_names=names)
             for i in range(len(images))]
    return visualize.save_grid(drawn, path, columns=columns)


def main(argv=None) -> int:
    p = cli.parser("ssd_jax.data.preview", __doc__, config="optional")
    p.add_argument("--out", default="grid.png", help="PNG to write (default grid.png)")
    p.add_argument("--size", type=int, default=None, help="square image size (default: the config's image_size, "
                   "else 300)")
    p.add_argument("--num", type=int, default=16, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed")
    p.add_argument("--split", choices=("train", "eval"), default="train",
                   help="train: augmented training samples; eval: resized eval images")
    args, overrides = cli.parse(p, argv)
    config = cli.load_config(args.config or "shapes", overrides)
    size = args.size or config.get("image_size") or 300
    grid = preview_grid(config.data, args.out, (size, size), args.num, args.seed,
                        columns=int(np.ceil(np.sqrt(args.num))), split=args.split)
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.exit_with(main)
