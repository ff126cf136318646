"""ONNX export: the network and box decoding through jax2onnx, then ONNX's own NonMaxSuppression.

jax2onnx (0.17) cannot convert the padded greedy NMS of :mod:`ssd_jax.nms` ("NotImplementedError:
scatter pattern not supported in plugins": the ``.at[slot].set(..., mode="drop")`` that fills
the kept-box buffer), and with a symbolic batch it also fails earlier on the post-processing's
``%`` ("InconclusiveDimensionOperation: Symbolic dimension 'B' used in a context that requires
a constant", in its ``rem`` lowering). The network is traced inside
:func:`ssd_jax.ops.platform.for_converters`: jax2onnx cannot lower the per-platform switch of
the CPU formulations (``platform_index``), and turns an NHWC max pool into a ``MaxPool`` with a
4-D kernel that onnxruntime refuses ("Unsupported pooling size"); there the network has XLA's
generic convolutions and max pooling as maxima of strided slices. So the JAX part ends at
decoded, clipped boxes ``[B, A, 4]`` and per-class scores ``[B, C-1, A]`` (softmax, each class's best
``pre_nms_top_k`` kept, the rest zeroed), and the rest of :func:`ssd_jax.postprocess.detect`
is written in ONNX ops appended to that graph:

  ``NonMaxSuppression`` (per image and class; IoU > threshold suppresses, scores must be
  > score_threshold, at most ``max_detections`` per class) -> the selected (image, class,
  anchor) triples; their scores placed in a ``[B, N + K]`` matrix (-1 elsewhere and in K
  padding columns) whose ``TopK`` (ties: lower index, i.e. lower class first) gives each
  image's best K in descending score; boxes, classes and ``num_valid`` gathered from it.

Same semantics as ``postprocess.detect``, with two documented differences: a class's
``pre_nms_top_k`` cut keeps every candidate tied with its k-th score (``detect`` keeps exactly
k, lower anchor first), and the IoU is computed by onnxruntime in its own float order, so a
pair whose IoU is within rounding of the threshold may be decided differently.
"""

from __future__ import annotations

import math

import numpy as np

BBOX_XFORM_CLIP = math.log(1000.0 / 16)  # as ssd_jax.boxes.decode (torchvision's clamp)
VARIANCES = (0.1, 0.2)


def pre_nms_function(graph):
    """``images uint8 -> (boxes [B, A, 4] corners in [0, 1], scores [B, C-1, A])``."""
    import jax
    import jax.numpy as jnp

    anchors = np.asarray(graph.anchors, np.float32)
    k = graph.metadata["postprocess"]["pre_nms_top_k"]

    def fn(images):
        loc, logits = graph.network(images)
        loc = loc.astype(jnp.float32)
        d = jnp.asarray(anchors)
        cxcy = d[:, :2] + loc[..., :2] * VARIANCES[0] * d[:, 2:]
        wh = d[:, 2:] * jnp.exp(jnp.minimum(loc[..., 2:] * VARIANCES[1], BBOX_XFORM_CLIP))
        boxes = jnp.clip(jnp.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=-1), 0.0, 1.0)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        scores = jnp.transpose(probs[..., 1:], (0, 2, 1))
        if k < scores.shape[-1]:
            kth = jax.lax.top_k(scores, k)[0][..., k - 1:k]
            scores = jnp.where(scores >= kth, scores, 0.0)
        return boxes, scores

    return fn


def _append_nms(model, score_threshold, iou_threshold, max_detections, batch_dim):
    """Appends NMS + padding to a model whose outputs are ``pre_boxes``, ``pre_scores``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    K = int(max_detections)
    consts = {
        "nms_max_out": np.asarray([K], np.int64),
        "nms_iou": np.asarray([iou_threshold], np.float32),
        "nms_score": np.asarray([score_threshold], np.float32),
        "c_idx_b": np.asarray(0, np.int64),
        "c_idx_c": np.asarray(1, np.int64),
        "c_idx_ba": np.asarray([0, 2], np.int64),
        "c_zero_i64": np.asarray(0, np.int64),
        "c_one_i64": np.asarray(1, np.int64),
        "c_ax0": np.asarray([0], np.int64),
        "c_ax1": np.asarray([1], np.int64),
        "c_ax2": np.asarray([2], np.int64),
        "c_minus1": np.asarray(-1.0, np.float32),
        "c_minus_half": np.asarray(-0.5, np.float32),
        "c_zero_f": np.asarray(0.0, np.float32),
        "c_zero_i32": np.asarray(0, np.int32),
        "c_one_i32": np.asarray(1, np.int32),
        "c_K": np.asarray([K], np.int64),
        "c_pad_boxes": np.zeros((K, 4), np.float32),
        "c_pad_classes": np.zeros((K,), np.int32),
        "c_slice0": np.asarray([0], np.int64),
        "c_slice1": np.asarray([1], np.int64),
    }
    for name, value in consts.items():
        g.initializer.append(numpy_helper.from_array(value, name))
    n = helper.make_node
    nodes = [
        n("NonMaxSuppression", ["pre_boxes", "pre_scores", "nms_max_out", "nms_iou", "nms_score"], ["sel"],
          center_point_box=0),
        n("Gather", ["sel", "c_idx_b"], ["sel_b"], axis=1),                      # [N]
        n("Gather", ["sel", "c_idx_c"], ["sel_c"], axis=1),                      # [N]
        n("Gather", ["sel", "c_idx_ba"], ["sel_ba"], axis=1),                    # [N, 2]
        n("GatherND", ["pre_scores", "sel"], ["sel_scores"]),                    # [N]
        n("GatherND", ["pre_boxes", "sel_ba"], ["sel_boxes"]),                   # [N, 4]
        n("Shape", ["pre_scores"], ["s_shape"]),
        n("Slice", ["s_shape", "c_slice0", "c_slice1"], ["batch_1"]),             # [1] = B
        n("Squeeze", ["batch_1", "c_ax0"], ["batch"]),
        n("Range", ["c_zero_i64", "batch", "c_one_i64"], ["arange_b"]),         # [B]
        n("Unsqueeze", ["arange_b", "c_ax1"], ["arange_b1"]),                   # [B, 1]
        n("Unsqueeze", ["sel_b", "c_ax0"], ["sel_b0"]),                         # [1, N]
        n("Equal", ["arange_b1", "sel_b0"], ["match"]),                         # [B, N]
        n("Unsqueeze", ["sel_scores", "c_ax0"], ["sel_scores0"]),
        n("Where", ["match", "sel_scores0", "c_minus1"], ["key"]),              # [B, N]
        n("Concat", ["batch_1", "c_K"], ["pad_shape"], axis=0),
        n("Expand", ["c_minus1", "pad_shape"], ["key_pad"]),                    # [B, K]
        n("Concat", ["key", "key_pad"], ["key_ext"], axis=1),                   # [B, N + K]
        n("TopK", ["key_ext", "c_K"], ["top_vals", "top_idx"], axis=1, largest=1, sorted=1),
        n("Greater", ["top_vals", "c_minus_half"], ["valid"]),                  # [B, K]
        n("Concat", ["sel_boxes", "c_pad_boxes"], ["boxes_ext"], axis=0),       # [N + K, 4]
        n("Gather", ["boxes_ext", "top_idx"], ["boxes_g"], axis=0),             # [B, K, 4]
        n("Unsqueeze", ["valid", "c_ax2"], ["valid2"]),
        n("Where", ["valid2", "boxes_g", "c_zero_f"], ["boxes"]),
        n("Where", ["valid", "top_vals", "c_zero_f"], ["scores"]),
        n("Cast", ["sel_c"], ["sel_c32"], to=TensorProto.INT32),
        n("Add", ["sel_c32", "c_one_i32"], ["sel_class"]),
        n("Concat", ["sel_class", "c_pad_classes"], ["classes_ext"], axis=0),
        n("Gather", ["classes_ext", "top_idx"], ["classes_g"], axis=0),
        n("Where", ["valid", "classes_g", "c_zero_i32"], ["classes"]),
        n("Cast", ["valid"], ["valid32"], to=TensorProto.INT32),
        n("ReduceSum", ["valid32", "c_ax1"], ["num_valid"], keepdims=0),
    ]
    g.node.extend(nodes)
    del g.output[:]
    g.output.extend([
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch_dim, K, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch_dim, K]),
        helper.make_tensor_value_info("classes", TensorProto.INT32, [batch_dim, K]),
        helper.make_tensor_value_info("num_valid", TensorProto.INT32, [batch_dim]),
    ])
    onnx.checker.check_model(model)
    return model


def write_onnx(graph, out, batch, platforms):
    import jax
    import jax.numpy as jnp
    import onnx
    from jax2onnx import to_onnx

    from ssd_jax.ops.platform import for_converters

    del platforms
    h, w = ("H", "W") if graph.resize else graph.input_size
    batch_dim = "B" if batch == "dynamic" else int(batch)
    shape = (batch_dim, h, w, 3)
    if any(isinstance(d, str) for d in shape):
        shape = jax.export.symbolic_shape(", ".join(str(d) for d in shape))
    with for_converters():  # no platform switch, max pooling without reduce_window (ssd_jax.ops.platform)
        model = to_onnx(pre_nms_function(graph), [jax.ShapeDtypeStruct(shape, jnp.uint8)],
                        model_name="ssd_detector", input_names=["images"], output_names=["pre_boxes", "pre_scores"])
    pp = graph.metadata["postprocess"]
    model = _append_nms(model, pp["score_threshold"], pp["iou_threshold"], pp["max_detections"], batch_dim)
    onnx.save(model, out)
    return {"opset": int(max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))),
            "nms": "onnx NonMaxSuppression"}
