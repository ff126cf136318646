"""Looks at a config's training data and its default boxes: ``python -m ssd_jax.diagnose --config NAME``.

    python -m ssd_jax.diagnose --config raccoon --config.data.root=path/to/voc_folder --out runs/diag

Prints, for the training split: images (and how many have no objects: background-only examples),
boxes per class, box size and aspect-ratio quantiles per class, the COCO small/medium/large
split; then the default-box coverage (:mod:`ssd_jax.coverage`) of the config's default boxes
(``config.anchors`` on the model's maps): the fraction of ground-truth boxes whose best default box
has IoU >= ``config.matching.iou_threshold``, the mean best IoU and the positives per box,
overall, per class and per size; then a spec fitted to the data with its coverage beside the
current one, as ``--config.anchors...`` overrides ready to train with. Writes to ``--out``:
``box_stats.png`` (size and aspect-ratio histograms per class), ``coverage.png`` (best IoU
histogram, current vs fitted), ``uncovered.png`` (up to 16 images with only their uncovered boxes
drawn) and ``diagnose.json`` (every number printed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from ssd_jax import anchors as anchor_lib
from ssd_jax import cli, coverage

UNCOVERED_IMAGES = 16


def _quantiles(values: np.ndarray) -> str:
    if not len(values):
        return "-"
    q = np.quantile(values, [0.05, 0.5, 0.95])
    return f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}"


def box_statistics(split: coverage.SplitBoxes, class_names: Sequence[str]) -> dict:
    """Per class: box count, relative size ``sqrt(w h)`` (of the image side) and pixel aspect ``w / h``."""
    wh = split.boxes[:, 2:] - split.boxes[:, :2]
    hw_px = split.image_hw[split.image] if len(split.boxes) else np.zeros((0, 2))
    size = np.sqrt(wh[:, 0] * wh[:, 1])
    aspect = (wh[:, 0] * hw_px[:, 1]) / np.maximum(wh[:, 1] * hw_px[:, 0], 1e-9)
    stats = {}
    for c, name in enumerate(class_names):
        if c == 0:
            continue
        rows = split.labels == c
        stats[name] = {"boxes": int(rows.sum()), "size": size[rows], "aspect": aspect[rows]}
    return stats


def _format_table(title: str, rows: dict) -> str:
    lines = [title, f"  {'':<14} {'boxes':>6} {'coverage':>9} {'best IoU':>9} {'positives':>10}"]
    for name, s in rows.items():
        if s["boxes"]:
            lines.append(f"  {name:<14} {s['boxes']:>6} {s['coverage']:>9.3f} {s['mean_best_iou']:>9.3f} "
                         f"{s['mean_positives']:>10.2f}")
        else:
            lines.append(f"  {name:<14} {0:>6} {'-':>9} {'-':>9} {'-':>10}")
    return "\n".join(lines)


def plot_box_statistics(stats: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, s in stats.items():
        if s["boxes"]:
            axes[0].hist(s["size"], bins=30, range=(0, 1), histtype="step", label=name)
            axes[1].hist(np.log2(np.maximum(s["aspect"], 1e-3)), bins=30, range=(-3, 3), histtype="step", label=name)
    axes[0].set(xlabel="box size sqrt(w h) / image side", ylabel="boxes")
    axes[1].set(xlabel="log2 aspect ratio (w / h in pixels)", ylabel="boxes")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_coverage(best_current: np.ndarray, best_fitted: np.ndarray, iou_threshold: float, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(best_current, bins=40, range=(0, 1), histtype="step", label="current default boxes")
    ax.hist(best_fitted, bins=40, range=(0, 1), histtype="step", label="fitted default boxes")
    ax.axvline(iou_threshold, color="k", linestyle="--", linewidth=1)
    ax.set(xlabel="best IoU of a ground-truth box with any default box", ylabel="boxes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def draw_uncovered(split: coverage.SplitBoxes, uncovered: np.ndarray, load_image, class_names, path: str) -> int:
    """Draws up to :data:`UNCOVERED_IMAGES` images with their uncovered boxes; returns how many."""
    from ssd_jax import visualize

    images = list(dict.fromkeys(split.image[uncovered].tolist()))[:UNCOVERED_IMAGES]
    drawn = []
    for index in images:
        rows = uncovered[split.image[uncovered] == index]
        picture = np.asarray(load_image(index))
        drawn.append(visualize.draw_boxes(picture, split.boxes[rows], split.labels[rows], class_names=class_names))
    if drawn:
        visualize.save_grid(drawn, path)
    return len(drawn)


# ----------------------------------------------------------------------------- the command

def read_split(data_cfg, split: str, max_images: int) -> tuple[coverage.SplitBoxes, int, object]:
    """The ground truth of ``split`` (its first ``max_images`` images), the split's image count, and
    ``load_image(index) -> uint8 [H, W, 3]`` for drawing. Decodes each image once for its size."""
    from ssd_jax.data import registry

    source = registry.get_source(data_cfg)
    total = source.num_examples(split)
    stream = source.eval_stream(split, 0, 1, -1)
    boxes, labels, sizes = [], [], []
    for example in stream.take(max_images).as_numpy_iterator():
        boxes.append(example["boxes"])
        labels.append(example["labels"])
        sizes.append(example["image"].shape[:2])

    def load_image(index: int):
        return next(stream.skip(index).take(1).as_numpy_iterator())["image"]

    return coverage.SplitBoxes.from_images(boxes, labels, sizes), total, load_image


def _print_box_statistics(stats: dict, split: coverage.SplitBoxes, total: int, rep: dict):
    scanned = split.num_images
    print(f"training split: {scanned} images" + (f" (the first {scanned} of {total}; --max_images)"
                                                 if scanned < total else "")
          + f", {len(split.boxes)} boxes, {rep['images_without_boxes']} images without objects "
            "(background-only examples)")
    print(f"  {'class':<14} {'boxes':>6}  {'size sqrt(wh) 5/50/95%':>24}  {'aspect w/h 5/50/95%':>22}")
    for name, s in stats.items():
        print(f"  {name:<14} {s['boxes']:>6}  {_quantiles(s['size']):>24}  {_quantiles(s['aspect']):>22}")
    sizes = ", ".join(f"{name} {rep['per_size'][name]['boxes']}" for name in coverage.SIZE_BUCKETS)
    print(f"  COCO size split (area in image pixels): {sizes}")


def _jsonable(rep: dict) -> dict:
    return {k: v for k, v in rep.items() if k not in ("result", "uncovered")} | {
        "uncovered_boxes": len(rep["uncovered"])}


def diagnose(config, out_dir: str | None = None, max_images: int = 5000) -> dict:
    """Prints the data and coverage report of ``config``'s training split; writes PNGs and JSON to ``out_dir``."""
    from ssd_jax import data, models

    info = data.dataset_info(config.data)
    split, total, load_image = read_split(config.data, config.data.train_split, max_images)
    spec = models.config_spec(config)
    threshold = float(config.matching.iou_threshold)
    names = info.class_names
    current = coverage.report(split, anchor_lib.default_boxes(spec), threshold, names)
    stats = box_statistics(split, names)
    _print_box_statistics(stats, split, total, current)
    print(f"\ndefault boxes of {config.model} at {spec.image_size[0]}x{spec.image_size[1]}: {spec.num_boxes} "
          f"on {len(spec.feature_map_sizes)} maps; a box is covered at best IoU >= {threshold}")
    print(_format_table("coverage per class (current default boxes)", current["per_class"]))
    print(_format_table("coverage per size", current["per_size"]))
    fitted_spec, overrides = coverage.fit_spec(spec, split, threshold)
    fitted = coverage.report(split, anchor_lib.default_boxes(fitted_spec), threshold, names)
    a, b = current["all"], fitted["all"]
    print(f"\n  {'':<10} {'boxes':>6} {'coverage':>9} {'best IoU':>9} {'positives':>10}")
    print(f"  {'current':<10} {spec.num_boxes:>6} {a['coverage']:>9.3f} {a['mean_best_iou']:>9.3f} "
          f"{a['mean_positives']:>10.2f}")
    print(f"  {'fitted':<10} {fitted_spec.num_boxes:>6} {b['coverage']:>9.3f} {b['mean_best_iou']:>9.3f} "
          f"{b['mean_positives']:>10.2f}")
    if overrides:
        print(f"train with the fitted default boxes:\n  {coverage.overrides_to_flags(overrides)}")
    else:
        print("the current default boxes cover the data best among the fitted candidates; keep them")
    result = {"current": dict(_jsonable(current), num_default_boxes=spec.num_boxes),
              "fitted": dict(_jsonable(fitted), num_default_boxes=fitted_spec.num_boxes), "fitted_overrides": overrides,
              "num_images": split.num_images, "split_images": total,
              "box_statistics": {name: {"boxes": s["boxes"]} for name, s in stats.items()}}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        plot_box_statistics(stats, os.path.join(out_dir, "box_stats.png"))
        plot_coverage(current["result"]["best_iou"], fitted["result"]["best_iou"], threshold,
                      os.path.join(out_dir, "coverage.png"))
        n = draw_uncovered(split, current["uncovered"], load_image, names, os.path.join(out_dir, "uncovered.png"))
        with open(os.path.join(out_dir, "diagnose.json"), "w") as f:
            json.dump(result, f, indent=2, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x))
        print(f"wrote {out_dir}/box_stats.png, coverage.png, " + (f"uncovered.png ({n} images), " if n else "")
              + "diagnose.json")
    return result


def main(argv=None) -> int:
    p = cli.parser("ssd_jax.diagnose", __doc__, config="required")
    p.add_argument("--out", default=None, help="folder for box_stats.png, coverage.png, uncovered.png, diagnose.json")
    p.add_argument("--max_images", type=int, default=5000, help="scan at most this many training images")
    args, overrides = cli.parse(p, argv)
    cli.quiet_libraries()
    diagnose(cli.load_config(args.config, overrides), args.out, args.max_images)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.exit_with(main)
