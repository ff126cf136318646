"""Writers of the export formats (see :mod:`ssd_jax.export`)."""

from __future__ import annotations

import contextlib
import os
import shutil

from ssd_jax.export._common import require

DEPENDENCIES = {
    "stablehlo": (),
    "saved_model": (("tensorflow", "the saved_model format"),),
    "onnx": (("jax2onnx", "the onnx format"), ("onnx", "the onnx format"), ("onnxruntime", "the onnx format")),
    "tflite": (("tensorflow", "the tflite format"),),
}


def check_dependencies(format: str):
    for module, what in DEPENDENCIES[format]:
        require(module, what)


def _input_spec(graph, batch, names="b"):
    """``(shape with None for dynamic dims, jax.export polymorphic shape string)``."""
    h, w = (None, None) if graph.resize else graph.input_size
    shape = (None if batch == "dynamic" else batch, h, w, 3)
    poly = "(" + ", ".join(n if d is None else str(d) for d, n in zip(shape, (names, "h", "w", "c"))) + ")"
    return shape, poly


def exported_stablehlo(graph, batch, platforms):
    """The ``jax.export.Exported`` of the graph."""
    import jax
    import jax.numpy as jnp

    shape, poly = _input_spec(graph, batch)
    if None in shape:
        shape = jax.export.symbolic_shape(poly)
    spec = jax.ShapeDtypeStruct(shape, jnp.uint8)
    return jax.export.export(jax.jit(graph.fn), platforms=platforms)(spec)


def write_stablehlo(graph, out, batch, platforms):
    exported = exported_stablehlo(graph, batch, platforms)
    with open(out, "wb") as f:
        f.write(exported.serialize())
    return {"jax_serialization_version": int(exported.calling_convention_version)}


# TensorFlow deserializes the StableHLO inside XlaCallModule with its own, older StableHLO
# (TF 2.21: v1.13.7). jax 0.10 serializes for a version >= 4 weeks old (v1.15), whose
# vhlo.composite_v2 (the form of chlo.top_k) TF cannot read: "unregistered operation
# 'vhlo.composite_v2' found in dialect ('vhlo')". Serializing for TF's version instead
# downgrades to ops it knows (the module uses nothing newer).
def _tf_stablehlo_version() -> str | None:
    try:
        from tensorflow.compiler.mlir.stablehlo import stablehlo as tf_stablehlo
        return tf_stablehlo.get_current_version()
    except Exception:
        return None


@contextlib.contextmanager
def _serialize_for(version: str | None):
    """Within: jax.export serializes StableHLO for ``version`` (None: unchanged)."""
    from jax._src.export import _export
    from jax._src.lib import _jax

    if version is None:
        yield
        return
    original = _export._module_to_bytecode

    def to_bytecode(module):
        return _jax.mlir.serialize_portable_artifact(module, version, _export.xb.get_backend().serialize_with_sdy)

    _export._module_to_bytecode = to_bytecode
    try:
        yield
    finally:
        _export._module_to_bytecode = original


def tf_function(graph, batch, platforms, sort_free=False):
    """A ``tf.function`` (uint8 images -> dict of outputs) wrapping the graph through jax2tf."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    shape, poly = _input_spec(graph, batch)
    fn = graph.make(per_image=batch == "dynamic", sort_free=sort_free)
    converted = jax2tf.convert(fn, polymorphic_shapes=[poly if None in shape else None],
                               native_serialization_platforms=platforms, with_gradient=False)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8, name="images")], autograph=False)
    def serve(images):
        with _serialize_for(_tf_stablehlo_version()):
            return converted(images)

    serve.get_concrete_function()  # trace (and serialize) now, inside the context
    return serve


def write_saved_model(graph, out, batch, platforms):
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf_function(graph, batch, platforms)
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(os.path.join(out, "saved_model.pb")):
            from ssd_jax.export._common import ExportError

            raise ExportError(f"{out} exists and is not a SavedModel; choose a new --out folder")
        shutil.rmtree(out)  # an earlier export: replaced
    tf.saved_model.save(module, out, signatures={"serving_default": module.serve})
    return {"signature": "serving_default", "input_name": "images"}


def write_tflite(graph, out, batch, platforms):
    """The jax2tf function through ``TFLiteConverter`` (builtin ops only: the StableHLO, NMS
    loops included, is legalised to TFLite ops). Fixed batch only: with a symbolic batch the
    converter fails ("Could not translate MLIR to FlatBuffer ... 'vhlo.dynamic_slice_v1' op is
    not part of the vhlo support yet", TF 2.21)."""
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf_function(graph, batch, ("cpu",), sort_free=True)
    concrete = module.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    data = converter.convert()
    with open(out, "wb") as f:
        f.write(data)
    return {}


def write_onnx(graph, out, batch, platforms):
    from ssd_jax.export import _onnx

    return _onnx.write_onnx(graph, out, batch, platforms)
