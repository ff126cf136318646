"""Mosaic augmentation: several augmented training examples tiled into one image.

Small detection datasets rarely show two objects side by side (the raccoon set: 12 of 160 training
photos), and a detector trained on them tends to draw one box around two neighbours. A mosaic
puts ``tiles`` examples into one training image, each augmented by the ordinary SSD chain at its
tile's size, so the network sees several objects per image, next to each other:

- ``tiles = 2``: side by side (1 x 2) or one above the other (2 x 1), chosen at random, each tile
  half the image (its content squeezed by 2 along the split, within the SSD crop's 1/2..2 aspect
  range);
- ``tiles = 4``: a 2 x 2 grid (YOLOv4's mosaic without the random centre), each tile a quarter of
  the image at the example's own aspect.

``data.augment.mosaic_prob`` (0 = off, the default) is the probability that a training example
becomes a mosaic: the example itself in the first tile and donors drawn uniformly from the
split (with replacement) in the others. Everything is a pure function of ``(seed, position)``,
so the stream stays deterministic, resumable and process-count invariant. A mosaic holds up to
``tiles`` times ``max_boxes`` boxes, so the training batches have that many box slots
(:func:`box_slots`). Needs an indexed source (shapes, voc_folder, coco_json).
"""

from __future__ import annotations

from ssd_jax.data import augment, copy_paste
from ssd_jax.data.tf_setup import tf

TILES = (2, 4)


def check(aug) -> tuple[float, int]:
    """``(mosaic_prob, mosaic_tiles)`` of a data.augment section; ValueError naming a bad field."""
    prob = float(aug.get("mosaic_prob", 0.0))
    tiles = int(aug.get("mosaic_tiles", 4))
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"data.augment.mosaic_prob must be in [0, 1], got {prob}")
    if tiles not in TILES:
        raise ValueError(f"data.augment.mosaic_tiles must be 2 or 4, got {tiles}")
    return prob, tiles


def validate(data_cfg) -> None:
    """Raises ValueError naming the field when the data section's mosaic settings cannot work."""
    prob, _ = check(data_cfg.augment)
    paste = copy_paste.check(data_cfg.augment)
    if (prob > 0 or paste > 0) and data_cfg.source == "tfds":
        raise ValueError("data.augment.mosaic_prob and paste_prob need an indexed source (shapes, voc_folder, "
                         "coco_json), not 'tfds'")


def box_slots(aug, max_boxes: int) -> int:
    """Box slots of a training example: ``max_boxes``, times the tile count when mosaics are on."""
    prob, tiles = check(aug)
    return max_boxes * tiles if prob > 0 else max_boxes


def tile_layout(out_size, rows: int, cols: int):
    """Tile sizes of a ``rows x cols`` grid over ``out_size = (H, W)``: the first row/column get
    ``H // rows`` / ``W // cols`` pixels, the last the remainder, so the tiles cover the image
    exactly. -> list of ``(row, col, (y0, x0), (h, w))`` in row-major order."""
    height, width = int(out_size[0]), int(out_size[1])
    ys = [0, height // 2, height] if rows == 2 else [0, height]
    xs = [0, width // 2, width] if cols == 2 else [0, width]
    return [(r, c, (ys[r], xs[c]), (ys[r + 1] - ys[r], xs[c + 1] - xs[c])) for r in range(rows) for c in range(cols)]


def assemble(tiles, out_size, rows: int, cols: int):
    """Tiles -> one example.

    ``tiles``: ``rows * cols`` tuples ``(image [h, w, 3], boxes [n, 4], labels [n], difficult [n])``
    in row-major order, image sizes as :func:`tile_layout` gives; boxes are corners in [0, 1] of
    their tile. Returns ``(image [H, W, 3], boxes [sum n, 4], labels, difficult)`` with each box
    mapped into the whole image: ``x -> (x0 + x * w) / W``, ``y -> (y0 + y * h) / H``.
    """
    height, width = float(out_size[0]), float(out_size[1])
    layout = tile_layout(out_size, rows, cols)
    images = [t[0] for t in tiles]
    image = tf.concat([tf.concat(images[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)
    boxes = []
    for (_, _, (y0, x0), (h, w)), (_, b, _, _) in zip(layout, tiles):
        scale = tf.constant([w / width, h / height, w / width, h / height])
        shift = tf.constant([x0 / width, y0 / height, x0 / width, y0 / height])
        boxes.append(b * scale + shift)
    return (image, tf.concat(boxes, 0), tf.concat([t[2] for t in tiles], 0), tf.concat([t[3] for t in tiles], 0))


def mosaic_transform(example, seed, load, num_examples: int, out_size, aug, fill, scale, offset, tiles: int):
    """A mosaic of ``example`` and ``tiles - 1`` donors ``load(index)`` (raw examples), each through
    ``augment.train_transform`` at its tile's size with its own seed. -> like ``train_transform``."""
    s = tf.random.experimental.stateless_split(seed, 2 * tiles + 1)
    donors = [load(tf.random.stateless_uniform([], s[tiles + k], 0, num_examples, dtype=tf.int64))
              for k in range(tiles - 1)]
    raw = [example, *donors]

    def build(rows, cols):
        parts = [augment.train_transform(e["image"], e["boxes"], e["labels"], e["difficult"], s[k], size, aug,
                                         fill, scale, offset)
                 for k, (e, (_, _, _, size)) in enumerate(zip(raw, tile_layout(out_size, rows, cols)))]
        return assemble(parts, out_size, rows, cols)

    if tiles == 4:
        return build(2, 2)
    side_by_side = tf.random.stateless_uniform([], s[2 * tiles]) < 0.5
    return tf.cond(side_by_side, lambda: build(1, 2), lambda: build(2, 1))


def maybe_mosaic(example, seed, load, num_examples: int, out_size, aug, fill, scale, offset):
    """With probability ``aug.mosaic_prob`` a :func:`mosaic_transform`, else ``augment.train_transform``
    (with the very seed it gets when mosaics are off, so ``mosaic_prob=0`` changes nothing)."""
    prob, tiles = check(aug)

    def plain():
        return augment.train_transform(example["image"], example["boxes"], example["labels"], example["difficult"],
                                        seed, out_size, aug, fill, scale, offset)

    if prob <= 0.0:
        return plain()
    mosaic_seed = tf.random.experimental.stateless_fold_in(seed, 0x6D6F73)  # independent of plain()'s draws
    use = tf.random.stateless_uniform([], mosaic_seed) < prob
    return tf.cond(use, lambda: mosaic_transform(example, tf.random.experimental.stateless_split(mosaic_seed, 1)[0],
                                                 load, num_examples, out_size, aug, fill, scale, offset, tiles),
                   plain)
