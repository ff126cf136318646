"""The exported detection graph: uint8 images -> normalisation -> network -> ``postprocess.detect``.

Built from :class:`ssd_jax.Detector` (``Detector.from_workdir``), so the exported function uses
exactly the Detector's module, variables, default boxes, normalisation and post-processing
thresholds (``model.json`` ``postprocess``); the variables and default boxes become constants
of the graph and the thresholds are fixed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

OUTPUT_NAMES = ("boxes", "scores", "classes", "num_valid")


@dataclasses.dataclass
class DetectionGraph:
    """A pure JAX function ``images uint8 [B, H, W, 3] -> {boxes, scores, classes, num_valid}``.

    Attributes:
      fn: the function (closes over the variables; traceable with symbolic B, and with
        symbolic H, W when ``resize``).
      input_size: the model's ``(height, width)``; the input's H, W unless ``resize``.
      resize: whether ``fn`` resizes any H, W to ``input_size`` itself (bilinear, half-pixel
        centres, no antialiasing: the training pipeline's resize, not the Detector's PIL one).
      metadata: what the sidecar JSON holds (class names, normalisation, thresholds, ...).
      make: ``make(per_image=False, sort_free=False)`` -> a variant of ``fn`` with the same
        results (post-processing per image in a ``lax.map``; no sort in the graph).
      network: ``images uint8 -> (loc [B, A, 4], logits [B, A, C])`` (normalisation, resize included).
      anchors: the default boxes ``[A, 4]`` ``(cx, cy, w, h)``.
      detector: the :class:`ssd_jax.Detector` it was built from.
    """

    fn: object
    make: object
    network: object
    anchors: np.ndarray
    input_size: tuple
    resize: bool
    metadata: dict
    detector: object


def bilinear_resize(images, size):
    """float ``[B, H, W, C]`` -> ``[B, h, w, C]``, bilinear with half-pixel centres, no antialias.

    Written with gathers whose indices are computed from the input shape, so H and W may be
    symbolic (one exported function for every input size).
    """
    import jax.numpy as jnp

    def axis_weights(n_in, n_out):
        n_in_f = jnp.asarray(n_in, jnp.float32)
        pos = (jnp.arange(n_out, dtype=jnp.float32) + 0.5) * (n_in_f / n_out) - 0.5
        pos = jnp.clip(pos, 0.0, n_in_f - 1.0)
        lo = jnp.floor(pos)
        frac = pos - lo
        lo = lo.astype(jnp.int32)
        hi = jnp.minimum(lo + 1, jnp.asarray(n_in, jnp.int32) - 1)
        return lo, hi, frac

    h, w = size
    y0, y1, fy = axis_weights(images.shape[1], h)
    x0, x1, fx = axis_weights(images.shape[2], w)
    rows = (jnp.take(images, y0, axis=1) * (1.0 - fy)[None, :, None, None]
            + jnp.take(images, y1, axis=1) * fy[None, :, None, None])
    return (jnp.take(rows, x0, axis=2) * (1.0 - fx)[None, None, :, None]
            + jnp.take(rows, x1, axis=2) * fx[None, None, :, None])


def build(workdir: str, checkpoint="best", resize: bool = False) -> DetectionGraph:
    """The detection graph of a training workdir's checkpoint (see the module docstring)."""
    import jax
    import jax.numpy as jnp

    import ssd_jax
    from ssd_jax import anchors as anchor_lib
    from ssd_jax import checkpoints, postprocess
    from ssd_jax.data.normalize import scale_and_offset

    detector = ssd_jax.Detector.from_workdir(workdir, checkpoint)
    info = checkpoints.read_model_info(workdir)
    module = detector.module
    variables = jax.device_get(detector.variables)
    anchors = np.asarray(anchor_lib.default_boxes(detector.spec), np.float32)
    scale, offset = (np.asarray(a, np.float32) for a in scale_and_offset(detector.normalization))
    height, width = detector.input_size
    thresholds = dict(score_threshold=detector.score_threshold, iou_threshold=detector.iou_threshold,
                      pre_nms_top_k=detector.pre_nms_top_k, max_detections=detector.max_detections)

    def network(images):
        x = images.astype(jnp.float32)
        if resize:
            x = bilinear_resize(x, (height, width))
        x = x * scale + offset
        return module.apply(variables, x, train=False)

    def make(per_image: bool = False, sort_free: bool = False):
        """The detection function. ``per_image``: post-process one image at a time (lax.map):
        every shape inside the loop is static even when the batch is symbolic, which TensorFlow's
        shape refinement of a jax2tf graph needs (it cannot refine top_k on a symbolic batch).
        ``sort_free``: a candidate pool holding every (class, anchor) score, so ``detect`` is
        exact with top_k alone and never takes its fallback path, whose stable argsort TFLite
        cannot convert ("'vhlo.sort_v1' op is not part of the vhlo support yet"). Same results."""
        options = dict(thresholds)
        if sort_free:
            options["candidate_pool"] = (detector.num_classes - 1) * int(anchors.shape[0])

        def detect(loc, logits):
            return postprocess.detect(loc, logits, jnp.asarray(anchors), **options)

        def fn(images):
            loc, logits = network(images)
            if not per_image:
                det = detect(loc, logits)
                return {"boxes": det.boxes, "scores": det.scores, "classes": det.classes, "num_valid": det.num_valid}

            def one(outputs):
                det = detect(outputs[0][None], outputs[1][None])
                return det.boxes[0], det.scores[0], det.classes[0], det.num_valid[0]

            boxes, scores, classes, num_valid = jax.lax.map(one, (loc, logits))
            return {"boxes": boxes, "scores": scores, "classes": classes, "num_valid": num_valid}

        return fn

    metadata = {
        "model": info.get("model"),
        "workdir": workdir,
        "checkpoint_step": int(detector.step),
        "class_names": list(detector.class_names),
        "num_classes": int(detector.num_classes),
        "input_size": [int(height), int(width)],
        "input": ("uint8 RGB [B, H, W, 3], any H, W (resized in the graph: bilinear, half-pixel centres, "
                  "no antialiasing)" if resize else
                  f"uint8 RGB [B, {height}, {width}, 3] (resize on the host first, e.g. PIL bilinear as "
                  "ssd_jax.Detector does)"),
        "resize_in_graph": bool(resize),
        "normalization": detector.normalization,
        "normalization_scale": [float(v) for v in scale],
        "normalization_offset": [float(v) for v in offset],
        "postprocess": thresholds,
        "outputs": {
            "boxes": "float32 [B, K, 4] corners (xmin, ymin, xmax, ymax) normalised to [0, 1]",
            "scores": "float32 [B, K], descending",
            "classes": "int32 [B, K], 1..C-1 (index into class_names), 0 in padded slots",
            "num_valid": "int32 [B], slots 0..num_valid-1 are real detections",
        },
        "num_default_boxes": int(anchors.shape[0]),
    }
    return DetectionGraph(fn=make(), make=make, network=network, anchors=anchors,
                          input_size=(int(height), int(width)), resize=bool(resize), metadata=metadata,
                          detector=detector)
