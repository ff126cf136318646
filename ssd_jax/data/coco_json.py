"""COCO-format JSON annotations plus an image folder (what most labelling tools export).

``annotations`` and ``root`` may contain "{split}" (e.g. "ann/instances_{split}.json",
"images/{split}"); without it both splits read the same file. Category ids map to contiguous
labels 1..C-1 in sorted-id order; class names are the category names. COCO boxes are
``[x, y, w, h]`` in pixels (continuous, edges at integers), converted to
``(x / W, y / H, (x + w) / W, (y + h) / H)``. Crowd boxes (``iscrowd=1``) are dropped for
training and marked ``difficult`` for evaluation (ignored: neither counted nor penalised).
``image_id`` is the COCO image id.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from ssd_jax.data import records as rec


@functools.lru_cache(maxsize=16)
def _load_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"coco_json: annotation file {path} does not exist")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"coco_json: cannot parse {path}: {error}") from None
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"coco_json: {path} has no {key!r} list")
    return data


def split_paths(cfg, split: str) -> tuple[str, str]:
    return cfg.annotations.replace("{split}", split), cfg.root.replace("{split}", split)


def class_names_in(annotation_path: str) -> tuple[str, ...]:
    """Category names in sorted-id order (without background)."""
    categories = sorted(_load_json(annotation_path)["categories"], key=lambda c: c["id"])
    return tuple(str(c["name"]) for c in categories)


def load_split(annotation_path: str, image_root: str, class_names: tuple[str, ...], strict: bool,
               training: bool) -> rec.Records:
    """Records of one split; ``class_names`` includes "background" at index 0."""
    data = _load_json(annotation_path)
    label_of_name = {name: i for i, name in enumerate(class_names) if i > 0}
    label_of_id = {}
    for category in data["categories"]:
        if category["name"] not in label_of_name:
            raise ValueError(f"coco_json: category {category['name']!r} of {annotation_path} is not in "
                             f"class_names {class_names[1:]}")
        label_of_id[category["id"]] = label_of_name[category["name"]]
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    out = rec.Records([], [], [], [], [], [])
    counts: dict[str, int] = {}
    for image in sorted(data["images"], key=lambda im: im["id"]):
        path = os.path.join(image_root, image["file_name"])
        size = rec.check_image_file(path, strict)
        if size is None:
            continue
        height, width = image.get("height") or size[0], image.get("width") or size[1]
        anns = by_image.get(image["id"], [])
        unknown = sorted({a["category_id"] for a in anns} - set(label_of_id))
        if unknown:
            raise ValueError(f"coco_json: annotations of image {image['id']} in {annotation_path} use "
                             f"unknown category ids {unknown}")
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
        if training:
            anns = [a for a, c in zip(anns, crowd) if not c]
            crowd = np.zeros(len(anns), bool)
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) / [width, height, width, height]
        labels = np.array([label_of_id[a["category_id"]] for a in anns], np.int32)
        boxes, (labels, crowd) = rec.clean_boxes(boxes, [labels, crowd], path, counts)
        out.paths.append(path)
        out.boxes.append(boxes)
        out.labels.append(labels)
        out.difficult.append(crowd)
        out.image_ids.append(int(image["id"]))
        out.names.append(str(image["file_name"]))
    rec.log_box_counts(f"coco_json {annotation_path}", "", counts)
    return rec.require_nonempty(out, f"coco_json {annotation_path}", "")
