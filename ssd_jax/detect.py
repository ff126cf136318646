"""``python -m ssd_jax.detect``: detect objects in image files with a trained workdir.

    python -m ssd_jax.detect --workdir runs/shapes photos/ extra.jpg --out detections/ \\
        --score-threshold 0.3

Writes ``<name>.json`` (pixel boxes in the file's own pixels, scores, classes) and an annotated
``<name>.jpg`` per input; folders are searched recursively. Files are read with
:func:`ssd_jax.images.load_image` (large images downscaled to ``--max-side``) and detected in
batches with :class:`ssd_jax.detector.Detector`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ssd_jax import cli
from ssd_jax.detector import Detector, ImageDetections
from ssd_jax.images import MAX_SIDE, load_image


def _list_inputs(paths: Sequence[str]) -> list[tuple[str, str]]:
    """``(path, output name)`` of every input; folders give their files (recursively, sorted)."""
    items = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if not f.startswith("."):
                        full = os.path.join(root, f)
                        items.append((full, os.path.relpath(full, path)))
        else:
            items.append((path, os.path.basename(path)))
    names, out = set(), []
    for path, rel in items:  # output names: the relative path without extension, made unique
        stem = os.path.splitext(rel)[0] or rel
        name, i = stem, 1
        while name in names:
            name, i = f"{stem}_{i}", i + 1
        names.add(name)
        out.append((path, name))
    return out


def _summary(name: str, result: ImageDetections, limit: int = 5) -> str:
    shown = ", ".join(f"{n} {s:.2f}" for n, s in zip(result.class_names[:limit], result.scores[:limit]))
    more = f", +{len(result) - limit} more" if len(result) > limit else ""
    h, w = result.image_size
    return f"{name}: {w}x{h}, {len(result)} detection{'s' if len(result) != 1 else ''}" + (
        f" ({shown}{more})" if len(result) else "")


def _write_outputs(out_dir: str, name: str, path: str, image: np.ndarray, original_size, result: ImageDetections,
                   class_names, meta: dict):
    from ssd_jax.visualize import draw_boxes

    height, width = original_size
    loaded_h, loaded_w = image.shape[:2]
    scale = np.asarray([width / loaded_w, height / loaded_h] * 2, np.float32)
    full = dataclasses.replace(result, boxes=result.boxes * scale, image_size=(height, width))
    record = dict(image=os.path.abspath(path), **full.to_dict(), **meta)
    json_path = os.path.join(out_dir, name + ".json")
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(record, f, indent=2)
    normalised = result.boxes / np.asarray([loaded_w, loaded_h] * 2, np.float32)
    drawn = draw_boxes(image, normalised, result.classes, result.scores, class_names=class_names)
    Image.fromarray(drawn).save(os.path.join(out_dir, name + ".jpg"), quality=92)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssd_jax.detect``; returns the exit status (0: every input worked, 1: some input
    failed; the others are still processed and written)."""
    p = cli.parser("ssd_jax.detect", "Detect objects in images with a trained workdir; writes <name>.json (pixel "
                   "boxes, scores, classes) and an annotated <name>.jpg per input into --out.")
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--workdir", required=True, help="training workdir (model.json + checkpoints)")
    p.add_argument("--checkpoint", default="best", help="best (default; falls back to latest), latest or a step")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score_threshold", type=float, default=0.3, help="minimum class score (default 0.3)")
    p.add_argument("--iou_threshold", type=float, default=None, help="NMS IoU (default: model.json's)")
    p.add_argument("--max_detections", type=int, default=None, help="per image (default: model.json's)")
    p.add_argument("--batch_size", type=int, default=8, help="images per network call (default 8)")
    p.add_argument("--max_side", type=int, default=MAX_SIDE,
                   help=f"larger images are downscaled to this longer side when read (default {MAX_SIDE})")
    args, _ = cli.parse(p, argv)
    checkpoint = args.checkpoint
    if checkpoint not in ("best", "latest"):
        if not checkpoint.isdigit():
            p.error(f"--checkpoint must be best, latest or a step number, got {checkpoint!r}")
        checkpoint = int(checkpoint)
    detector = Detector.from_workdir(args.workdir, checkpoint, buckets=sorted({1, max(1, args.batch_size)}))
    inputs = _list_inputs(args.inputs)
    os.makedirs(args.out, exist_ok=True)
    meta = dict(workdir=os.path.abspath(args.workdir), checkpoint_step=detector.step,
                score_threshold=args.score_threshold)
    failed = []
    try:
        from tqdm import tqdm
        progress = tqdm(total=len(inputs), unit="image", disable=None if len(inputs) > 1 else True)
        write = tqdm.write
    except ImportError:
        progress, write = None, print

    def flush(batch):
        results = detector([image for _, _, image, _ in batch], score_threshold=args.score_threshold,
                           iou_threshold=args.iou_threshold, max_detections=args.max_detections)
        for (path, name, image, original), result in zip(batch, results):
            try:
                _write_outputs(args.out, name, path, image, original, result, detector.class_names, meta)
            except OSError as e:
                failed.append(path)
                write(f"FAILED {path}: cannot write outputs ({e})")
                continue
            write(_summary(path, dataclasses.replace(result, image_size=original)))
        if progress is not None:
            progress.update(len(batch))

    batch = []
    for path, name in inputs:
        try:
            image, original = load_image(path, max_side=args.max_side)
        except (ValueError, OSError) as e:
            failed.append(path)
            msg = str(e) if str(path) in str(e) else f"{path}: {e}"
            write(f"FAILED {msg}")
            if progress is not None:
                progress.update(1)
            continue
        batch.append((path, name, image, original))
        if len(batch) == max(1, args.batch_size):
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if progress is not None:
        progress.close()
    done = len(inputs) - len(failed)
    print(f"{done} of {len(inputs)} images processed, {len(failed)} failed; outputs in {args.out}"
          + (f"\nfailed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    cli.exit_with(main)
