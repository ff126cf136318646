"""Export a trained detector, post-processing (NMS) included, as one self-contained graph.

    from ssd_jax.export import export_detector, load
    export_detector("runs/raccoon", "raccoon.stablehlo", format="stablehlo", batch="dynamic",
                    platforms=("cpu", "cuda", "tpu"))
    detect = load("raccoon.stablehlo")           # needs only JAX (no Flax, no model code)
    out = detect(images_uint8)                    # [B, H, W, 3] at the model input size
    out["boxes"], out["scores"], out["classes"], out["num_valid"]

    python -m ssd_jax.export --workdir runs/raccoon --format onnx --out raccoon.onnx --batch dynamic

The exported function takes uint8 RGB ``[B, H, W, 3]`` at the model's input size (the
Detector's convention: it resizes on the host, so one graph serves every photo size and only
the small image travels to the device; ``resize=True`` / ``--resize`` instead accepts any
H, W and resizes in the graph), normalises, runs the network, decodes the boxes and runs
:func:`ssd_jax.postprocess.detect` with the workdir's thresholds (``model.json``
``postprocess``), and returns ``boxes [B, K, 4]`` (normalised corners), ``scores [B, K]``,
``classes [B, K]`` and ``num_valid [B]``. A JSON file next to the artifact
(``<out>.json``) holds the class names, input size, normalisation and thresholds.

Formats:
  ``stablehlo``     ``jax.export`` serialization (symbolic batch with ``batch="dynamic"``),
                    lowered for every platform in ``platforms``; :func:`load` runs it.
  ``saved_model``   TensorFlow SavedModel (jax2tf, native serialization: the same StableHLO
                    inside an ``XlaCallModule`` op), ``serving_default`` signature.
  ``onnx``          the network and box decoding through jax2onnx, NMS as ONNX's own
                    ``NonMaxSuppression`` (jax2onnx cannot convert the padded NMS); onnxruntime.
  ``tflite``        the SavedModel's function through ``tf.lite.TFLiteConverter`` (StableHLO
                    legalised to TFLite ops); runs in the LiteRT interpreter.

This module imports nothing heavy: :func:`load` of a StableHLO artifact needs only JAX.
"""

from __future__ import annotations

import json
import os

from ssd_jax.export._common import (
    DEFAULT_BATCH,
    FORMATS,
    PLATFORMS,
    ExportError,
    metadata_path,
    parse_batch,
    parse_platforms,
)


def export_detector(workdir: str, out: str, format: str = "stablehlo", checkpoint="best", batch=None,
                    platforms=None, resize: bool = False) -> dict:
    """Exports a training workdir's detector with post-processing into ``out``.

    Args:
      workdir: a training workdir (``model.json`` + checkpoints).
      out: the artifact path (a file; a directory for ``saved_model``). ``<out>.json`` gets
        the metadata.
      format: one of :data:`FORMATS`.
      checkpoint: ``"best"`` (falls back to the latest), ``"latest"`` or a step.
      batch: a positive int, or ``"dynamic"`` (symbolic batch). Default: dynamic, 1 for tflite.
      platforms: lowering platforms for ``stablehlo`` / ``saved_model`` (subset of
        :data:`PLATFORMS`, default cpu); the other formats are platform-neutral.
      resize: accept any image size and resize in the graph (default: the model input size).

    Returns:
      the metadata written next to the artifact.
    Raises:
      ExportError: unknown format or platform, bad batch.
      FileNotFoundError: no workdir / model.json, or no such checkpoint.
      ImportError: a dependency of the format is missing (names the export extra).
    """
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    batch = parse_batch(DEFAULT_BATCH[format] if batch is None else batch)
    platforms = parse_platforms(platforms)
    if format == "tflite" and batch == "dynamic":
        raise ExportError("tflite needs a fixed batch (--batch N; TFLite's converter cannot legalise the "
                          "symbolic-batch graph); LiteRT's resize_tensor_input does not apply either")
    if format in ("onnx", "tflite") and platforms != ("cpu",):
        raise ExportError(f"--platforms applies to stablehlo and saved_model; {format} is platform-neutral")
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"workdir {workdir} does not exist")
    checkpoint = _parse_checkpoint(checkpoint)
    if format != "saved_model" and os.path.isdir(out):
        raise ExportError(f"--out {out} is a folder; {format} writes a file")
    from ssd_jax.export import _formats, _graph

    writer = {"stablehlo": _formats.write_stablehlo, "saved_model": _formats.write_saved_model,
              "onnx": _formats.write_onnx, "tflite": _formats.write_tflite}[format]
    _formats.check_dependencies(format)  # a missing extra fails before the slow part
    graph = _graph.build(workdir, checkpoint, resize=resize)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    extra = writer(graph, out, batch=batch, platforms=platforms) or {}
    metadata = dict(graph.metadata, format=format, batch=batch,
                    platforms=list(platforms) if format in ("stablehlo", "saved_model") else None,
                    artifact=os.path.basename(os.path.normpath(out)), **extra)
    with open(metadata_path(out), "w") as f:
        json.dump(metadata, f, indent=2)
    return metadata


def _parse_checkpoint(checkpoint):
    if checkpoint in ("best", "latest"):
        return checkpoint
    if isinstance(checkpoint, int) or (isinstance(checkpoint, str) and checkpoint.isdigit()):
        return int(checkpoint)
    raise ExportError(f"checkpoint must be best, latest or a step number, got {checkpoint!r}")


def read_metadata(path: str) -> dict | None:
    """The sidecar JSON of artifact ``path``, or None when there is none."""
    meta = metadata_path(path)
    if not os.path.exists(meta):
        return None
    with open(meta) as f:
        return json.load(f)


class ExportedDetector:
    """A deserialized StableHLO detector: ``detector(images uint8 [B, H, W, 3]) -> dict of numpy``.

    Needs only JAX. ``exported`` is the ``jax.export.Exported``; ``metadata`` the sidecar JSON
    (None when absent); ``input_shape`` the accepted shape (None for symbolic dimensions).
    """

    def __init__(self, exported, metadata=None):
        import jax

        from ssd_jax import xla_options

        self.exported = exported
        self.metadata = metadata
        aval = exported.in_avals[0]
        self.input_shape = tuple(d if isinstance(d, int) else None for d in aval.shape)
        self.output_names = ("boxes", "scores", "classes", "num_valid")
        backend = jax.default_backend()
        if backend not in exported.platforms and not (backend == "gpu" and "cuda" in exported.platforms):
            raise ExportError(f"this artifact is lowered for {', '.join(exported.platforms)}, but JAX runs on "
                              f"{backend}; export it again with --platforms including {backend}")
        self._call = jax.jit(exported.call, compiler_options=xla_options.compiler_options())

    def check_input(self, images):
        import numpy as np

        array = np.asarray(images)
        if array.dtype != np.uint8:
            raise ExportError(f"expected uint8 RGB images [B, H, W, 3], got dtype {array.dtype}")
        if array.ndim != len(self.input_shape) or any(
                want is not None and got != want for got, want in zip(array.shape, self.input_shape)):
            want = ", ".join("?" if d is None else str(d) for d in self.input_shape)
            raise ExportError(f"expected images of shape [{want}] (uint8 RGB, '?' any size), got {list(array.shape)}"
                              + ("; resize them to the model input size first" if array.ndim == 4 else ""))
        return array

    def __call__(self, images) -> dict:
        import jax

        out = self._call(self.check_input(images))
        return dict(jax.device_get(out))


def load(path: str) -> ExportedDetector:
    """Loads a ``stablehlo`` artifact as a callable (see :class:`ExportedDetector`); needs only JAX."""
    import jax

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no exported model at {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        exported = jax.export.deserialize(bytearray(data))
    except Exception as e:
        raise ExportError(f"{path} is not a serialized jax.export artifact (written with --format stablehlo): "
                          f"{type(e).__name__}: {str(e)[:200]}") from e
    return ExportedDetector(exported, read_metadata(path))


__all__ = [
    "FORMATS",
    "PLATFORMS",
    "ExportError",
    "ExportedDetector",
    "export_detector",
    "load",
    "metadata_path",
    "read_metadata",
]
