"""Inference: the :class:`Detector` API and ``python -m ssd_jax.detect``.

    detector = Detector.from_workdir("runs/shapes")              # best checkpoint (or latest)
    results = detector([image_a, image_b], score_threshold=0.3)   # uint8 RGB arrays / PIL images
    results[0].boxes       # [N, 4] float32 (xmin, ymin, xmax, ymax) in image_a's own pixels
    results[0].class_names # ("circle", ...)

    python -m ssd_jax.detect --workdir runs/shapes photos/ extra.jpg --out detections/ \\
        --score-threshold 0.3

Conventions: images are RGB uint8 ``[H, W, 3]`` (grayscale ``[H, W]`` / ``[H, W, 1]`` and RGBA
are converted); pixel boxes are corners ``(xmin, ymin, xmax, ymax)`` in the input image's pixel
coordinates (continuous: the whole image is ``(0, 0, W, H)``); the network's boxes are the
same corners normalised to [0, 1]. Class 0 is background and never returned.

Pipeline: on the host, each image is converted to RGB and resized to the model input with PIL
bilinear (a warp, no aspect preservation, as SSD trains); the resized uint8 batch is padded to
a bucket size (1, 8, 32 by default; longer lists are chunked) and one jit-compiled function
normalises it, runs the network and :func:`ssd_jax.postprocess.detect`. Score and IoU
thresholds are traced arguments (changing them does not recompile); the function is compiled
for the configured ``max_detections`` and a smaller per-call value slices the result. Since the
resize is a warp, normalised boxes scale back to pixels by ``(W, H, W, H)``.

Resizing on the host keeps one compiled function for all input sizes and sends only the small
resized image to the device (``experiments/benchmarks/bench_detector.py`` measures it).
PIL's bilinear filter antialiases when shrinking, unlike the training pipeline's
``tf.image.crop_and_resize``; the difference is small at typical photo-to-300 px ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import warnings
from typing import Sequence

import numpy as np
from PIL import Image

DEFAULT_BUCKETS = (1, 8, 32)
# File loading (CLI): images are downscaled so that the longer side is at most MAX_SIDE before
# detection and drawing (the model input is at most 512 px); MAX_DECODE_PIXELS bounds what is
# decoded at full resolution (JPEG is decoded at a reduced scale with Image.draft first).
MAX_SIDE = 2048
MAX_DECODE_PIXELS = 150_000_000


# ----------------------------------------------------------------------------- results

@dataclasses.dataclass(frozen=True)
class ImageDetections:
    """Detections of one image, in descending score.

    Attributes:
      boxes: ``[N, 4]`` float32 pixel corners ``(xmin, ymin, xmax, ymax)`` of the input image.
      scores: ``[N]`` float32.
      classes: ``[N]`` int32 class ids, 1..C-1.
      class_names: ``N`` names, ``class_names[i]`` of ``classes[i]``.
      image_size: ``(height, width)`` of the input image in pixels.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_names: tuple
    image_size: tuple

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict:
        """JSON-ready: image size and a list of {box, score, class_id, class_name}."""
        height, width = self.image_size
        return {"image_size": {"height": int(height), "width": int(width)},
                "detections": [{"box": [round(float(v), 3) for v in box], "score": round(float(score), 5),
                                "class_id": int(cls), "class_name": name}
                               for box, score, cls, name in zip(self.boxes, self.scores, self.classes,
                                                                self.class_names)]}


def to_pixel_boxes(boxes, image_size) -> np.ndarray:
    """Normalised corners ``[..., 4]`` -> pixel corners of an image of ``(height, width)``.

    The model input is a warp of the whole image, so x scales by the width and y by the height.
    """
    height, width = image_size
    return np.asarray(boxes, np.float32) * np.asarray([width, height, width, height], np.float32)


# ----------------------------------------------------------------------------- images

def to_rgb_uint8(image) -> np.ndarray:
    """A PIL image or array -> uint8 RGB ``[H, W, 3]``.

    Accepts any PIL mode (converted to RGB, alpha dropped), and arrays ``[H, W]``, ``[H, W, 1]``
    (grayscale), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA, alpha dropped) of uint8, or of
    another integer type with values in 0..255. Floats are refused (their range is ambiguous).
    """
    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        pass
    elif array.ndim != 2:
        raise ValueError(f"expected an image [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty image of shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
            raise ValueError(f"expected uint8 pixels 0..255, got dtype {array.dtype} (scale and cast floats "
                             f"yourself, e.g. (x * 255).round().astype(np.uint8) for values in [0, 1])")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"integer image values must be in 0..255, got {array.min()}..{array.max()}")
        array = array.astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def resize_rgb(image: np.ndarray, size) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[h, w, 3]`` for ``size = (h, w)``, PIL bilinear (a warp)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


@contextlib.contextmanager
def _no_pil_pixel_limit():
    """PIL refuses images above 2 x MAX_IMAGE_PIXELS; load_image applies its own limit instead."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def load_image(path: str, max_side: int = MAX_SIDE,
               max_decode_pixels: int = MAX_DECODE_PIXELS) -> tuple[np.ndarray, tuple]:
    """Reads an image file as uint8 RGB, downscaled so that its longer side is <= ``max_side``.

    Huge images are handled deliberately: JPEGs are decoded at a reduced scale
    (``Image.draft``); other formats are decoded in full only up to ``max_decode_pixels``.

    Returns:
      ``(image [h, w, 3] uint8, (height, width) of the file)``.
    Raises:
      ValueError: not an image, truncated or corrupt, or too large to decode; names the file.
    """
    try:
        with _no_pil_pixel_limit(), Image.open(path) as im:
            original = (im.height, im.width)
            if im.format == "JPEG" and max(original) > max_side:
                im.draft("RGB", (max_side, max_side))  # decodes at 1/2, 1/4 or 1/8 scale, >= the request
            if im.width * im.height > max_decode_pixels:
                raise ValueError(f"{path}: {original[1]}x{original[0]} image is too large to decode "
                                 f"(more than {max_decode_pixels} pixels)")
            im.load()
            if max(im.size) > max_side:
                im.thumbnail((max_side, max_side), Image.BILINEAR)
            return to_rgb_uint8(im), original
    except ValueError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:  # PIL reports bad files so
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e


# ----------------------------------------------------------------------------- detector

def _variables(params_or_variables) -> dict:
    tree = dict(params_or_variables)
    if "params" in tree:
        return tree
    return {"params": tree}


def _check_variables(module, variables, spec, num_classes, where: str):
    """Raises ValueError when the variables do not fit the module (e.g. another class count)."""
    import flax.traverse_util
    import jax
    import jax.numpy as jnp

    expected = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3)),
                                                  train=False))
    expected = {k: v for k, v in flax.traverse_util.flatten_dict(dict(expected)).items()}
    actual = flax.traverse_util.flatten_dict(variables)
    expected = {k: v for k, v in expected.items() if k[0] in ("params", "batch_stats")}
    actual = {k: v for k, v in actual.items() if k[0] in ("params", "batch_stats")}
    for key, value in expected.items():
        got = actual.get(key)
        if got is not None and tuple(got.shape) != tuple(value.shape) and any(
                str(p).startswith("conf_") for p in key) and value.shape[-1] % num_classes == 0:
            per_class = value.shape[-1] // num_classes
            if got.shape[-1] % per_class == 0:
                raise ValueError(
                    f"{where}: model.json says {num_classes} classes (background included) but the "
                    f"checkpoint's class head {'/'.join(map(str, key))} has {got.shape[-1] // per_class} "
                    f"(shape {tuple(got.shape)}, expected {tuple(value.shape)})")
    missing = sorted("/".join(map(str, k)) for k in set(expected) - set(actual))
    extra = sorted("/".join(map(str, k)) for k in set(actual) - set(expected))
    wrong = sorted(f"{'/'.join(map(str, k))} {tuple(actual[k].shape)} (expected {tuple(v.shape)})"
                   for k, v in expected.items() if k in actual and tuple(actual[k].shape) != tuple(v.shape))
    if missing or extra or wrong:
        parts = [f"{name}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                 for name, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if items]
        raise ValueError(f"{where}: the parameters do not fit the model; " + "; ".join(parts))


class Detector:
    """An SSD ready for inference on images of any size (see the module docstring).

    Args:
      module: the Flax SSD module (``models.create``), ``(images, train=False) -> (loc, logits)``.
      params_or_variables: its params tree, or variables ``{"params": ..., "batch_stats": ...}``.
      spec: the module's ``anchors.DefaultBoxSpec`` (input size and default boxes).
      class_names: names indexed by class id, index 0 = background.
      normalization: pixel normalisation of the model ("caffe", "imagenet", "unit").
      score_threshold, iou_threshold, pre_nms_top_k, max_detections: post-processing defaults
        (``postprocess.detect``); ``max_detections`` is also the per-call maximum.
      buckets: padded batch sizes; a call with ``n`` images runs batches of the smallest bucket
        >= n, and lists longer than the largest bucket in chunks of it.
      device: where the network runs (default: the first local device).
      check: verify that the variables fit the module (names and shapes).
    """

    def __init__(self, module, params_or_variables, spec, class_names: Sequence[str], *,
                 normalization: str = "imagenet", score_threshold: float = 0.01, iou_threshold: float = 0.45,
                 pre_nms_top_k: int = 400, max_detections: int = 200, buckets: Sequence[int] = DEFAULT_BUCKETS,
                 device=None, check: bool = True, name: str = "Detector"):
        import jax
        import jax.numpy as jnp

        from ssd_jax import anchors as anchor_lib
        from ssd_jax import postprocess, xla_options
        from ssd_jax.data.normalize import scale_and_offset

        self.module = module
        self.spec = spec
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.normalization = normalization
        self.input_size = tuple(spec.image_size)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.max_detections = int(max_detections)
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        if not self.buckets or self.buckets[0] < 1:
            raise ValueError(f"buckets must be positive batch sizes, got {buckets!r}")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        variables = _variables(params_or_variables)
        if check:
            _check_variables(module, variables, spec, self.num_classes, name)
        self.device = device or jax.local_devices()[0]
        self.variables = jax.device_put(variables, self.device)
        self.trace_count = 0  # how many times the batch function was traced (= compiled)

        anchors = jnp.asarray(anchor_lib.default_boxes(spec))
        scale, offset = (jnp.asarray(a) for a in scale_and_offset(normalization))

        def run(variables, images_uint8, score_threshold, iou_threshold):
            self.trace_count += 1
            images = images_uint8.astype(jnp.float32) * scale + offset
            loc, logits = module.apply(variables, images, train=False)
            return postprocess.detect(loc, logits, anchors, score_threshold=score_threshold,
                                      iou_threshold=iou_threshold, pre_nms_top_k=self.pre_nms_top_k,
                                      max_detections=self.max_detections)

        self._run = jax.jit(run, compiler_options=xla_options.compiler_options(self.device.platform))

    @classmethod
    def from_workdir(cls, workdir: str, checkpoint: str | int = "best", **overrides) -> "Detector":
        """Restores a trained model from a training workdir.

        Args:
          workdir: a directory written by ``ssd_jax.train`` (``model.json`` + checkpoints).
          checkpoint: "best" (falls back to the latest when no evaluation ran), "latest" or a step.
          overrides: keyword arguments of :class:`Detector` (e.g. ``score_threshold``), replacing
            the ``postprocess`` values of ``model.json``.
        Raises:
          FileNotFoundError: no model.json or no such checkpoint (names the workdir).
          ValueError: the checkpoint does not fit model.json (e.g. another number of classes).
        """
        import jax.numpy as jnp

        from ssd_jax import checkpoints, models
        from ssd_jax.trained_anchors import trained_spec

        info = checkpoints.read_model_info(workdir)
        dtype = {"float32": None, "bfloat16": jnp.bfloat16}.get(info.get("dtype", "float32"))
        module, spec = models.create(info["model"], int(info["num_classes"]), dtype=dtype,
                                     image_size=tuple(info["image_size"]))
        spec = trained_spec(info, spec)  # converted weights carry the boxes they were trained with
        variables, step = checkpoints.load_model_variables(workdir, checkpoint)
        class_names = info.get("class_names") or ["background"] + [f"class_{i}" for i in range(1, info["num_classes"])]
        if len(class_names) != int(info["num_classes"]):
            raise ValueError(f"{workdir}/model.json: num_classes is {info['num_classes']} but class_names has "
                             f"{len(class_names)} entries")
        pp = dict(info.get("postprocess", {}))
        kwargs = dict(normalization=info.get("normalization") or models.input_normalization(info["model"]),
                      **{k: pp[k] for k in ("score_threshold", "iou_threshold", "pre_nms_top_k", "max_detections")
                         if k in pp})
        kwargs.update(overrides)
        detector = cls(module, variables, spec, class_names, name=f"{workdir} (checkpoint step {step})", **kwargs)
        detector.workdir, detector.step = workdir, step
        return detector

    def bucket(self, n: int) -> int:
        """The padded batch size used for ``n`` images (``n`` <= the largest bucket)."""
        return next(b for b in self.buckets if b >= n)

    def preprocess(self, images: Sequence) -> tuple[np.ndarray, list]:
        """Images -> (uint8 ``[n, h, w, 3]`` at the model input size, original ``(H, W)`` sizes)."""
        arrays = [to_rgb_uint8(im) for im in images]
        return (np.stack([resize_rgb(a, self.input_size) for a in arrays]) if arrays else
                np.zeros((0, *self.input_size, 3), np.uint8)), [a.shape[:2] for a in arrays]

    def predict_batch(self, resized: np.ndarray, score_threshold=None, iou_threshold=None):
        """uint8 ``[n, h, w, 3]`` (already at the input size) -> host ``Detections`` of the n images,
        normalised boxes, ``max_detections`` slots (padded by the bucket, then cut back to n)."""
        import jax

        n = len(resized)
        size = self.bucket(n)
        if size > n:
            resized = np.concatenate([resized, np.zeros((size - n, *resized.shape[1:]), np.uint8)])
        score = np.float32(self.score_threshold if score_threshold is None else score_threshold)
        iou = np.float32(self.iou_threshold if iou_threshold is None else iou_threshold)
        dets = jax.device_get(self._run(self.variables, jax.device_put(resized, self.device), score, iou))
        return jax.tree_util.tree_map(lambda x: x[:n], dets)

    def __call__(self, images, score_threshold: float | None = None, iou_threshold: float | None = None,
                 max_detections: int | None = None):
        """Detects objects in one image or a list of images of any sizes.

        Args:
          images: a uint8 RGB array / PIL image, or a list of them (see :func:`to_rgb_uint8`).
          score_threshold, iou_threshold: override the defaults for this call (no recompilation).
          max_detections: at most the configured ``max_detections``.
        Returns:
          One :class:`ImageDetections` for a single image, else a list of them in input order.
        """
        single = isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim in (2, 3))
        batch = [images] if single else list(images)
        limit = self.max_detections if max_detections is None else int(max_detections)
        if not 0 <= limit <= self.max_detections:
            raise ValueError(f"max_detections must be in 0..{self.max_detections} (the compiled maximum; "
                             f"build the Detector with a larger max_detections), got {max_detections}")
        results = []
        chunk = self.buckets[-1]
        for start in range(0, len(batch), chunk):
            resized, sizes = self.preprocess(batch[start:start + chunk])
            dets = self.predict_batch(resized, score_threshold, iou_threshold)
            for i, size in enumerate(sizes):
                k = min(int(dets.num_valid[i]), limit)
                classes = np.asarray(dets.classes[i, :k], np.int32)
                results.append(ImageDetections(
                    boxes=to_pixel_boxes(dets.boxes[i, :k], size), scores=np.asarray(dets.scores[i, :k], np.float32),
                    classes=classes, class_names=tuple(self.class_names[c] for c in classes),
                    image_size=tuple(int(s) for s in size)))
        return results[0] if single else results


# ----------------------------------------------------------------------------- command line

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
    """``python -m ssd_jax.detect``; returns the exit status (0: every input worked, 1: some
    input failed, 2: the model could not be loaded)."""
    parser = argparse.ArgumentParser(prog="python -m ssd_jax.detect", description=(
        "Detect objects in images with a trained workdir; writes <name>.json (pixel boxes, scores, "
        "classes) and an annotated <name>.jpg per input into --out."))
    parser.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--workdir", required=True, help="training workdir (model.json + checkpoints)")
    parser.add_argument("--checkpoint", default="best", help="best (default; falls back to latest), latest or a step")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="minimum class score (default 0.3)")
    parser.add_argument("--iou-threshold", type=float, default=None, help="NMS IoU (default: model.json's)")
    parser.add_argument("--max-detections", type=int, default=None, help="per image (default: model.json's)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per network call (default 8)")
    parser.add_argument("--max-side", type=int, default=MAX_SIDE,
                        help=f"larger images are downscaled to this longer side when read (default {MAX_SIDE})")
    args = parser.parse_args(argv)

    checkpoint = args.checkpoint
    if checkpoint not in ("best", "latest"):
        if not checkpoint.isdigit():
            parser.error(f"--checkpoint must be best, latest or a step number, got {checkpoint!r}")
        checkpoint = int(checkpoint)
    try:
        detector = Detector.from_workdir(args.workdir, checkpoint, buckets=sorted({1, max(1, args.batch_size)}))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    sys.exit(main())
