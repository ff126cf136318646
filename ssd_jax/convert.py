"""Pretrained PyTorch weights -> ``ssd_jax`` params: torchvision and ssd.pytorch SSD300, VGG16 bases.

    params = convert.from_torchvision_ssd300_vgg16("ssd300_vgg16_coco-b556d3b4.pth")   # COCO, 91 classes
    params = convert.from_ssd_pytorch("ssd300_mAP_77.43_v2.pth")                      # VOC, 21 classes
    base = convert.vgg16_base_from_torchvision_imagenet("vgg16-397923af.pth")         # {"base": ...}
    base = convert.vgg16_base_from_reducedfc("vgg16_reducedfc.pth")                  # {"base": ...}

    python -m ssd_jax.convert --from torchvision_ssd300 ssd300_vgg16_coco-b556d3b4.pth --workdir runs/tv_coco

Every function takes a ``.pth`` path (read with ``torch.load(..., map_location="cpu",
weights_only=True)``; PyTorch is the optional extra ``pip install -e '.[torch]'``) or an
already loaded mapping name -> tensor / ndarray, and returns a nested dict of float32 NumPy
arrays shaped like ``models.create("ssd300_vgg16", C)``'s ``params`` (or its ``base`` subtree).
A leading ``module.`` (``DataParallel``) on every key is dropped. Missing, unexpected and
wrongly shaped keys are reported together in one ``ValueError``.

Layout, handled once in :func:`_convert`:
  * conv kernels ``[O, I, kh, kw]`` -> ``[kh, kw, I, O]`` (``transpose(2, 3, 1, 0)``);
  * head output channel ``b * 4 + j`` (offset ``j`` of box ``b``) and ``b * C + c``: torchvision
    (``view(N, -1, cols, H, W).permute(0, 3, 4, 1, 2)``) and ssd.pytorch (``permute(0, 2, 3, 1)
    .view(N, -1, 4)``) use the same order as our ``[H, W, k, 4]`` reshape, so no permutation;
    both concatenate maps conv4_3, fc7, conv8_2 .. conv11_2, as ours does;
  * input colour order and normalisation. Ours is RGB, 0..255 minus (123, 117, 104) ("caffe").
    - ssd.pytorch: BGR 0..255 minus (104, 117, 123): the same numbers in reverse channel order,
      so conv1_1's input-channel axis is flipped and nothing else changes (exact).
    - torchvision ssd300_vgg16: RGB / 255, minus mean (0.48235, 0.45882, 0.40784), divided by
      std 1/255, i.e. RGB 0..255 minus (122.99925, 116.99910, 103.99920): within 1e-3 of ours,
      which is below the 8-bit quantisation of the input, so weights are copied as they are.
    - torchvision ImageNet vgg16 (``IMAGENET1K_V1``): RGB / 255, minus (0.485, 0.456, 0.406),
      divided by (0.229, 0.224, 0.225). With ``fold_normalization=True`` (default) conv1_1 is
      rescaled so it takes our caffe input: kernel / (255 std_c) per input channel, bias +
      sum(kernel * (caffe_mean_c / 255 - mean_c) / std_c). Exact inside the image; at the
      one-pixel zero-padding border the padded value corresponds to the Caffe mean rather than
      the ImageNet mean (off by at most 0.0135 in torchvision's normalised units).
  * ImageNet fc6/fc7 -> atrous fc6 (3x3, dilation 6, 1024) / fc7 (1x1, 1024) as the SSD authors
    did: fc6 ``[4096, 512*7*7]`` -> ``[4096, 512, 7, 7][::4, :, ::3, ::3]``, fc7
    ``[4096, 4096][::4, ::4]``, biases ``[::4]``.

Default boxes: the converted heads only work with the boxes they were trained with;
:func:`model_info` records them in ``model.json`` (see :mod:`ssd_jax.trained_anchors`).

Keys and shapes of each source: :mod:`ssd_jax.convert_layouts`. This module needs only NumPy at
import time (JAX / orbax are imported by :func:`write_workdir` only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ssd_jax import cli, param_trees
from ssd_jax.convert_layouts import (
    BOXES_PER_LOCATION,
    COCO_91_CLASS_NAMES,
    SOURCES,
    VOC_21_CLASS_NAMES,
    expected_shapes,
    layout,
)
from ssd_jax.trained_anchors import TRAINED_ANCHORS

CAFFE_MEAN_RGB = (123.0, 117.0, 104.0)  # = ssd_jax.data.normalize.CAFFE_MEAN_RGB
TORCHVISION_SSD_MEAN = (0.48235, 0.45882, 0.40784)  # torchvision ssd300_vgg16 transform, std 1/255
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- loading

def load_state_dict(state_dict) -> dict:
    """A ``.pth`` / ``.npz`` path or a mapping -> ``{name: float32 ndarray}``, ``module.`` prefix removed.

    Raises:
      ImportError: a path was given and PyTorch is not installed (names the extra to install).
    """
    if isinstance(state_dict, (str, os.PathLike)):
        path = os.fspath(state_dict)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such checkpoint file: {path}")
        if path.endswith(".npz"):  # a state dict saved with np.savez: no PyTorch needed
            with np.load(path) as f:
                return load_state_dict({k: f[k] for k in f.files})
        try:
            import torch
        except ImportError as e:
            raise ImportError("reading .pth files needs PyTorch: pip install -e '.[torch]' (or pip install torch); "
                              "or pass an already loaded dict of NumPy arrays") from e
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):  # training checkpoints that wrap the weights
            if isinstance(state_dict, Mapping) and wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
                state_dict = state_dict[wrapper]
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a .pth path or a mapping name -> tensor, got {type(state_dict).__name__}")
    out = {}
    for name, value in state_dict.items():
        if hasattr(value, "detach"):  # torch.Tensor, without importing torch
            value = value.detach().cpu().float().numpy()
        out[str(name)] = np.asarray(value, np.float32)
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def _check_keys(state: Mapping, expected: Mapping, ignored: tuple = (), what: str = "state dict", hint: str = ""):
    """Raises one ``ValueError`` listing every missing, unexpected and wrongly shaped key.

    ``expected``: ``{torch key: shape}``. ``ignored``: key prefixes that may be present and are
    not used (e.g. the ImageNet classifier).
    """
    used = {k: v for k, v in state.items() if k in expected or not k.startswith(tuple(ignored))}
    diff = param_trees.compare_trees(expected, used)
    if not diff.matches:
        raise ValueError(f"{what} does not match the expected layout: {diff.describe()}"
                         + (f" {hint}" if hint and diff.wrong_shape else ""))


def _nest(flat: dict) -> dict:
    tree = {}
    for path, value in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return tree


def _convert(state: dict, entries: list, bgr_first_conv: bool = False) -> dict:
    """Copies each layout entry: kernels OIHW -> HWIO, biases and scales as they are."""
    flat = {}
    for path, key, _, _, k in entries:
        if k == 0:
            flat[path] = state[key].astype(np.float32)
            continue
        kernel = state[key + ".weight"].transpose(2, 3, 1, 0)
        if bgr_first_conv and path == ("base", "conv1_1"):
            kernel = kernel[:, :, ::-1, :]  # BGR input channels -> our RGB
        flat[path + ("kernel",)] = np.ascontiguousarray(kernel, np.float32)
        flat[path + ("bias",)] = state[key + ".bias"].astype(np.float32)
    return _nest(flat)


def _infer_num_classes(state, key, source):
    if key not in state:
        raise ValueError(f"{source}: cannot infer num_classes, {key} is missing")
    out = state[key].shape[0]
    if out % BOXES_PER_LOCATION[0]:
        raise ValueError(f"{source}: {key} has {out} outputs, not a multiple of {BOXES_PER_LOCATION[0]} boxes")
    return out // BOXES_PER_LOCATION[0]


# ----------------------------------------------------------------------------- converters

def from_torchvision_ssd300_vgg16(state_dict, num_classes: int | None = 91) -> dict:
    """torchvision ``ssd300_vgg16`` state dict -> params of ``models.create("ssd300_vgg16", num_classes)``.

    ``num_classes`` includes background (torchvision's COCO model: 91, with "N/A" gaps); ``None``
    reads it from the classification head. Inputs: RGB "caffe" normalisation (see module doc).
    The model must be used with ``anchors.SSD300_COCO`` default boxes (torchvision's scales
    0.07 .. 1.05), not ``ssd300_vgg16``'s own ``SSD300_VOC``.
    """
    state = load_state_dict(state_dict)
    if num_classes is None:
        num_classes = _infer_num_classes(state, "head.classification_head.module_list.0.bias", "torchvision_ssd300")
    _check_keys(state, expected_shapes("torchvision_ssd300", num_classes), what="torchvision ssd300_vgg16 state dict",
               hint=f"(converting for num_classes={num_classes}; num_classes=None reads it from the heads)")
    return _convert(state, layout("torchvision_ssd300", num_classes))


def from_ssd_pytorch(state_dict, num_classes: int | None = 21) -> dict:
    """amdegroot/ssd.pytorch SSD300 state dict (``vgg.N``, ``L2Norm.weight``, ``extras.N``,
    ``loc.N``, ``conf.N``) -> params of ``models.create("ssd300_vgg16", num_classes)``.

    conv1_1's input channels are flipped: ssd.pytorch takes BGR minus (104, 117, 123), ours
    RGB minus (123, 117, 104). ``None`` reads ``num_classes`` from ``conf.0``. ssd.pytorch's
    priors are ``anchors.SSD300_VOC`` clipped to [0, 1] (``SSD300_VOC.replace(clip=True)``).
    """
    state = load_state_dict(state_dict)
    if num_classes is None:
        num_classes = _infer_num_classes(state, "conf.0.bias", "ssd_pytorch")
    _check_keys(state, expected_shapes("ssd_pytorch", num_classes), what="ssd.pytorch state dict",
               hint=f"(converting for num_classes={num_classes}; num_classes=None reads it from the heads)")
    return _convert(state, layout("ssd_pytorch", num_classes), bgr_first_conv=True)


def vgg16_base_from_reducedfc(state_dict) -> dict:
    """ssd.pytorch ``vgg16_reducedfc.pth`` (keys ``0.weight`` .. ``33.bias`` of its vgg list)
    -> ``{"base": ...}`` without the L2Norm scale (it keeps its initial value 20).

    The weights take BGR 0..255 minus (104, 117, 123); conv1_1 is flipped to our RGB order.
    """
    state = load_state_dict(state_dict)
    _check_keys(state, expected_shapes("vgg16_reducedfc"), what="vgg16_reducedfc state dict")
    return _convert(state, layout("vgg16_reducedfc"), bgr_first_conv=True)


def subsample_fc6(weight, bias, in_channels: int = 512, window: int = 7) -> tuple:
    """ImageNet fc6 ``[4096, 512*7*7]``, ``[4096]`` -> atrous fc6 ``[1024, 512, 3, 3]``, ``[1024]``
    (PyTorch layout): every 4th output, taps 0, 3, 6 of the 7x7 window; used with dilation 6.
    The input axis is flattened ``(channel, y, x)`` as torchvision's ``flatten`` of ``[512, 7, 7]``."""
    w = np.asarray(weight, np.float32)
    w = w.reshape(w.shape[0], in_channels, window, window)
    return np.ascontiguousarray(w[::4, :, ::3, ::3]), np.asarray(bias, np.float32)[::4]


def subsample_fc7(weight, bias) -> tuple:
    """ImageNet fc7 ``[4096, 4096]``, ``[4096]`` -> 1x1 fc7 ``[1024, 1024, 1, 1]``, ``[1024]``
    (every 4th output and input)."""
    w = np.asarray(weight, np.float32)[::4, ::4]
    return np.ascontiguousarray(w[:, :, None, None]), np.asarray(bias, np.float32)[::4]


def vgg16_base_from_torchvision_imagenet(state_dict, fold_normalization: bool = True,
                                         include_fc: bool = True) -> dict:
    """torchvision ImageNet ``vgg16`` state dict -> ``{"base": ...}`` (conv1_1 .. fc7, no L2Norm scale).

    Args:
      fold_normalization: rescale conv1_1 from ImageNet mean/std input to our "caffe" input
        (``IMAGENET1K_V1`` weights; see the module docstring). ``False`` copies it unchanged,
        for weights that already take RGB 0..255 minus the mean (``IMAGENET1K_FEATURES``).
      include_fc: build fc6 / fc7 from ``classifier.0`` / ``classifier.3``
        (:func:`subsample_fc6`, :func:`subsample_fc7`). ``IMAGENET1K_FEATURES`` has NaN
        classifier weights: pass ``False`` and fc6 / fc7 are left out of the tree.
    """
    state = load_state_dict(state_dict)
    expected = expected_shapes("vgg16_imagenet")
    if not include_fc:
        expected = {k: v for k, v in expected.items() if not k.startswith("classifier.")}
    _check_keys(state, expected, ignored=("classifier.",), what="torchvision vgg16 state dict")
    params = _convert(state, layout("vgg16_imagenet"))
    if fold_normalization:
        params["base"]["conv1_1"] = fold_input_normalization(params["base"]["conv1_1"])
    bad = []
    if include_fc:
        for name, fn, key in (("fc6", subsample_fc6, "classifier.0"), ("fc7", subsample_fc7, "classifier.3")):
            w, b = fn(state[key + ".weight"], state[key + ".bias"])
            params["base"][name] = {"kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0)), "bias": b}
            bad += [f"{key} (-> {name})"] * (not (np.isfinite(w).all() and np.isfinite(b).all()))
    bad += [f"{name}" for name, layer in params["base"].items() if name.startswith("conv")
            and not all(np.isfinite(a).all() for a in layer.values())]
    if bad:
        raise ValueError(f"torchvision vgg16 state dict has non-finite values in: {', '.join(bad)}"
                         + (" (IMAGENET1K_FEATURES weights: use include_fc=False)" if include_fc else ""))
    return params


def fold_input_normalization(conv, mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB, caffe_mean=CAFFE_MEAN_RGB) -> dict:
    """First conv taking ``(x / 255 - mean) / std`` -> the same conv on ``x - caffe_mean`` (``x`` 0..255 RGB).

    ``conv``: ``{"kernel": [kh, kw, 3, O], "bias": [O]}``. With ``x - caffe_mean = y``,
    ``(x / 255 - mean) / std = y / (255 std) + (caffe_mean / 255 - mean) / std``.
    """
    mean, std, caffe_mean = (np.asarray(v, np.float64) for v in (mean, std, caffe_mean))
    kernel = np.asarray(conv["kernel"], np.float64)
    shift = (caffe_mean / 255.0 - mean) / std
    new_bias = np.asarray(conv["bias"], np.float64) + np.einsum("hwio,i->o", kernel, shift)
    new_kernel = kernel / (255.0 * std)[None, None, :, None]
    return {"kernel": new_kernel.astype(np.float32), "bias": new_bias.astype(np.float32)}


# ----------------------------------------------------------------------------- workdir / CLI

def model_info(source: str, num_classes: int) -> dict:
    """The ``model.json`` of a converted workdir (see :func:`write_workdir`)."""
    if source == "torchvision_ssd300" and num_classes == len(COCO_91_CLASS_NAMES):
        names = list(COCO_91_CLASS_NAMES)
    elif num_classes == len(VOC_21_CLASS_NAMES):
        names = list(VOC_21_CLASS_NAMES)
    else:
        names = ["background"] + [f"class_{i}" for i in range(1, num_classes)]
    info = dict(model="ssd300_vgg16", num_classes=num_classes, class_names=names, image_size=[300, 300],
                normalization="caffe", dtype="float32",
                postprocess=dict(score_threshold=0.01, iou_threshold=0.45, pre_nms_top_k=400, max_detections=200),
                converted_from=source)
    # The default boxes the weights were trained with (the ssd300_vgg16 factory's own are SSD300_VOC).
    info["anchors"] = dict(TRAINED_ANCHORS.get(source, {"preset": "SSD300_VOC", "clip": "none"}))
    return info


def convert_file(source: str, state_dict, num_classes: int | None = None) -> tuple[dict, int]:
    """``(params, num_classes)`` for one of :data:`SOURCES`; base-only sources give ``{"base": ...}``
    and ``num_classes`` (default 21) only names the classes of the workdir they go into."""
    if source == "torchvision_ssd300":
        params = from_torchvision_ssd300_vgg16(state_dict, num_classes)
        return params, params["heads"]["conf_0"]["bias"].shape[0] // BOXES_PER_LOCATION[0]
    if source == "ssd_pytorch":
        params = from_ssd_pytorch(state_dict, num_classes)
        return params, params["heads"]["conf_0"]["bias"].shape[0] // BOXES_PER_LOCATION[0]
    if source == "vgg16_imagenet":
        return vgg16_base_from_torchvision_imagenet(state_dict), num_classes or 21
    if source == "vgg16_reducedfc":
        return vgg16_base_from_reducedfc(state_dict), num_classes or 21
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")


def write_workdir(workdir: str, params: dict, info: dict):
    """Writes ``workdir/model.json`` and ``workdir/checkpoints/0/`` (items "model" and "train").

    "model" is ``{"params": params, "batch_stats": {}}``, what ``checkpoints.load_model_variables``
    restores; "train" is ``{"step": 0}`` (no optimiser state: use the workdir with
    ``--config.init_from`` or for inference, not to resume training).
    """
    from ssd_jax import checkpoints

    os.makedirs(workdir, exist_ok=True)
    if os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(os.path.join(workdir, "checkpoints")):
        raise FileExistsError(f"{workdir}/checkpoints already exists; convert into a new workdir")
    ckpt = checkpoints.Checkpointer(workdir)
    ckpt.save(0, model={"params": params, "batch_stats": {}}, train={"step": np.zeros((), np.int32)})
    ckpt.wait()
    ckpt.close()
    checkpoints.write_model_info(workdir, info)


def main(argv=None) -> int:
    p = cli.parser("ssd_jax.convert",
                   "Convert PyTorch SSD300 / VGG16 weights into an ssd_jax workdir (model.json + checkpoints/0).")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="layout of the .pth file")
    p.add_argument("path", help="the .pth file")
    p.add_argument("--workdir", required=True, help="output workdir (must not hold checkpoints yet)")
    p.add_argument("--num_classes", type=int, default=None,
                   help="classes incl. background (default: read from the heads; 21 for base-only sources)")
    args, _ = cli.parse(p, argv)
    try:
        params, num_classes = convert_file(args.source, args.path, args.num_classes)
        write_workdir(args.workdir, params, model_info(args.source, num_classes))
    except (ImportError, FileExistsError, TypeError) as e:  # no torch, an existing workdir, not a state dict
        raise ValueError(str(e)) from e
    n = sum(v.size for v in param_trees.flatten(params).values())
    print(f"wrote {args.workdir}: {args.source} -> ssd300_vgg16 ({', '.join(params)}), {n:,} parameters, "
          f"{num_classes} classes")
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.exit_with(main)
