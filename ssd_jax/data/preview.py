"""Write a PNG grid of augmented training (or eval) samples with their boxes and class names.

    python -m ssd_jax.data.preview --out grid.png                      # synthetic shapes
    python -m ssd_jax.data.preview --config shapes --out grid.png --size 300
``--config`` is a Python config file whose ``get_config()`` returns either the data section or
a full config with a ``data`` field (e.g. the trainer's configs); omitted: ``default_config()``.
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np

from ssd_jax import visualize
from ssd_jax.data import config as config_lib
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


def load_config(path: str | None):
    """The data section of a config (a packaged name such as ``shapes``, or a Python file with
    ``get_config()``), or the default."""
    if not path:
        return config_lib.default_config()
    from ssd_jax import configs

    try:
        path = configs.resolve(path)
    except FileNotFoundError as e:
        raise SystemExit(str(e))
    spec = importlib.util.spec_from_file_location("preview_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config()
    return cfg.data if "data" in cfg else cfg


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="config name (e.g. shapes) or Python file with get_config()")
    parser.add_argument("--out", default="grid.png")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("train", "eval"), default="train")
    args = parser.parse_args(argv)
    grid = preview_grid(load_config(args.config), args.out, (args.size, args.size), args.num, args.seed,
                        columns=int(np.ceil(np.sqrt(args.num))), split=args.split)
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()
