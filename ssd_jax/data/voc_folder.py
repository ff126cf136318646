"""Pascal-VOC-layout folders: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``.

Coordinate convention: VOC XML boxes are 1-based inclusive pixel indices, so a box covering
pixel columns ``xmin..xmax`` (1-based) has normalised corners
``((xmin - 1) / W, (ymin - 1) / H, xmax / W, ymax / H)``, W and H from ``<size>`` (or the image
header when ``<size>`` is missing or zero). XML is parsed with ``defusedxml`` (no entity expansion).
Classes are the sorted object names found in the splits read, unless given in the config.
Splits may be "+"-joined ("train+val"). ``image_id`` is the position of the image in the split list.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from defusedxml import ElementTree

from ssd_jax.data import records as rec


def split_ids(root: str, split: str) -> list[str]:
    """Image ids listed in ImageSets/Main/<split>.txt for each "+"-joined split, in file order."""
    ids = []
    for part in split.split("+"):
        path = os.path.join(root, "ImageSets", "Main", f"{part}.txt")
        if not os.path.isfile(path):
            raise ValueError(f"voc_folder: split file {path} does not exist")
        with open(path) as f:
            ids += [line.split()[0] for line in f if line.strip()]
    return ids


def _text(node, tag, default=None):
    child = node.find(tag)
    return default if child is None or child.text is None else child.text.strip()


def parse_annotation(path: str) -> dict:
    """Parse one VOC XML file -> {filename, width, height, objects: [(name, [x0,y0,x1,y1] pixels, difficult)]}.

    Raises ValueError (with the file name) on XML that does not parse or lacks required fields.
    """
    try:
        root = ElementTree.parse(path).getroot()
    except Exception as error:  # ParseError, defusedxml's EntitiesForbidden, OSError
        raise ValueError(f"cannot parse annotation {path}: {type(error).__name__}: {error}") from None
    size = root.find("size")
    width = int(float(_text(size, "width", 0))) if size is not None else 0
    height = int(float(_text(size, "height", 0))) if size is not None else 0
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name")
        bndbox = obj.find("bndbox")
        if name is None or bndbox is None:
            raise ValueError(f"annotation {path}: <object> without <name> or <bndbox>")
        try:
            corners = [float(_text(bndbox, t)) for t in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise ValueError(f"annotation {path}: object {name!r} has a missing or non-numeric coordinate") from None
        difficult = _text(obj, "difficult", "0") in ("1", "true", "True")
        objects.append((name, corners, difficult))
    return dict(filename=_text(root, "filename"), width=width, height=height, objects=objects)


@functools.lru_cache(maxsize=32)
def _scan(root: str, split: str, strict: bool):
    """Parsed, file-checked entries of a split: list of (id, image path, height, width, objects)."""
    entries = []
    for image_id in split_ids(root, split):
        xml_path = os.path.join(root, "Annotations", f"{image_id}.xml")
        if not os.path.isfile(xml_path):
            rec.skip_or_raise(f"missing annotation file {xml_path}", strict)
            continue
        try:
            ann = parse_annotation(xml_path)
        except ValueError as error:
            rec.skip_or_raise(str(error), strict)
            continue
        candidates = [os.path.join(root, "JPEGImages", f"{image_id}.jpg")]
        if ann["filename"]:
            candidates.insert(0, os.path.join(root, "JPEGImages", ann["filename"]))
        image_path = next((p for p in candidates if os.path.isfile(p)), candidates[0])
        size = rec.check_image_file(image_path, strict)
        if size is None:
            continue
        height, width = (ann["height"], ann["width"]) if ann["height"] > 0 and ann["width"] > 0 else size
        entries.append((image_id, image_path, height, width, ann["objects"]))
    return entries


def class_names_in(root: str, splits: list[str], strict: bool) -> tuple[str, ...]:
    """Sorted object class names appearing in the given splits (without background)."""
    names = {obj[0] for split in splits for entry in _scan(root, split, strict) for obj in entry[4]}
    return tuple(sorted(names))


def load_split(root: str, split: str, class_names: tuple[str, ...], strict: bool) -> rec.Records:
    """Records of one split; ``class_names`` includes "background" at index 0."""
    label_of = {name: i for i, name in enumerate(class_names) if i > 0}
    out = rec.Records([], [], [], [], [], [])
    counts: dict[str, int] = {}
    for position, (image_id, image_path, height, width, objects) in enumerate(_scan(root, split, strict)):
        unknown = sorted({o[0] for o in objects} - set(label_of))
        if unknown:
            raise ValueError(f"voc_folder: {image_id}.xml has class names {unknown} not in class_names "
                             f"{class_names[1:]}")
        pixels = np.array([o[1] for o in objects], np.float64).reshape(-1, 4)
        boxes = (pixels - [1.0, 1.0, 0.0, 0.0]) / [width, height, width, height]
        labels = np.array([label_of[o[0]] for o in objects], np.int32)
        difficult = np.array([o[2] for o in objects], bool)
        boxes, (labels, difficult) = rec.clean_boxes(boxes, [labels, difficult], image_path, counts)
        out.paths.append(image_path)
        out.boxes.append(boxes)
        out.labels.append(labels)
        out.difficult.append(difficult)
        out.image_ids.append(position)
        out.names.append(image_id)
    rec.log_box_counts(f"voc_folder {root}", split, counts)
    return rec.require_nonempty(out, f"voc_folder {root}", split)
