"""The :class:`Detector` API: a trained SSD applied to images of any size.

    detector = Detector.from_workdir("runs/shapes")              # best checkpoint (or latest)
    results = detector([image_a, image_b], score_threshold=0.3)   # uint8 RGB arrays / PIL images
    results[0].boxes       # [N, 4] float32 (xmin, ymin, xmax, ymax) in image_a's own pixels
    results[0].class_names # ("circle", ...)

Image and box conventions: :mod:`ssd_jax.images`. Class 0 is background and never returned.

Pipeline: on the host, each image is converted to RGB and resized to the model input
(:func:`ssd_jax.images.resize_rgb`, a warp); the resized uint8 batch is padded to a bucket size
(1, 8, 32 by default; longer lists are chunked) and one jit-compiled function normalises it,
runs the network and :func:`ssd_jax.postprocess.detect`. Score and IoU thresholds are traced
arguments (changing them does not recompile); the function is compiled for the configured
``max_detections`` and a smaller per-call value slices the result.

Resizing on the host keeps one compiled function for all input sizes and sends only the small
resized image to the device (``experiments/benchmarks/bench_detector.py`` measures it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ssd_jax import param_trees
from ssd_jax.images import resize_rgb, to_pixel_boxes, to_rgb_uint8

DEFAULT_BUCKETS = (1, 8, 32)


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


def _variables(params_or_variables) -> dict:
    tree = dict(params_or_variables)
    if "params" in tree:
        return tree
    return {"params": tree}


def _check_variables(module, variables, spec, num_classes, where: str):
    """Raises ValueError when the variables do not fit the module (e.g. another class count)."""
    import jax
    import jax.numpy as jnp

    expected = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3)),
                                                  train=False))
    collections = ("params", "batch_stats")
    diff = param_trees.compare_trees({k: v for k, v in dict(expected).items() if k in collections},
                                     {k: v for k, v in variables.items() if k in collections})
    for path, actual, wanted in diff.wrong_shape:
        if any(p.startswith("conf_") for p in path.split("/")) and wanted[-1] % num_classes == 0:
            per_class = wanted[-1] // num_classes
            if actual[-1] % per_class == 0:
                raise ValueError(
                    f"{where}: model.json says {num_classes} classes (background included) but the "
                    f"checkpoint's class head {path} has {actual[-1] // per_class} "
                    f"(shape {actual}, expected {wanted})")
    if not diff.matches:
        raise ValueError(f"{where}: the parameters do not fit the model; {diff.describe(limit=5)}")


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
        self.buckets = tuple(sorted({int(b) for b in buckets}))
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
    def from_workdir(cls, workdir: str, checkpoint: str | int = "best", **overrides) -> Detector:
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

        info = checkpoints.read_model_info(workdir)
        dtype = {"float32": None, "bfloat16": jnp.bfloat16}.get(info.get("dtype", "float32"))
        module, spec = models.from_model_info(info, dtype)
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
          images: a uint8 RGB array / PIL image, or a list of them (see :func:`ssd_jax.images.to_rgb_uint8`).
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
