"""Generates tests/fixtures/convert/*.npz: PyTorch reference outputs for tests/test_convert.py.

Run in a PyTorch environment (not /work/venv), from the repository root:

    python3 -m venv /work/venv-torch && . /work/venv-torch/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1 numpy
    python experiments/make_convert_fixtures.py

Weights come from ``ssd_jax.testing.synthetic_state_dict`` (NumPy, seeded), so the test rebuilds
the same state dict without PyTorch and the fixtures hold only inputs and outputs:

* ``torchvision_ssd300.npz``: torchvision ``ssd300_vgg16(num_classes=TV_CLASSES)`` on a synthetic
  300x300 RGB uint8 image: ``image``, the tensor torchvision's transform feeds the backbone
  (``input``, NHWC; RGB / 255 - mean (0.48235, 0.45882, 0.40784), / std 1/255), raw head
  outputs ``bbox_regression [8732, 4]``, ``cls_logits [8732, C]``, torchvision's ``anchors``
  (pixels, corners), its post-processed detections (``boxes`` in pixels, ``scores``,
  ``labels``), and its COCO category names.
* ``ssd_pytorch.npz``: an amdegroot/ssd.pytorch SSD300 (rebuilt below in plain torch: the package
  is not on PyPI) on the same image as BGR 0..255 minus (104, 117, 123): raw ``loc [8732, 4]``,
  ``conf [8732, C]`` and its ``priors`` (PriorBox, VOC config, clip=True).
* ``layouts.json``: the real state-dict keys and shapes of torchvision ``ssd300_vgg16``,
  ``vgg16`` and the ssd.pytorch modules, to check ``convert_layouts.expected_shapes`` against.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from ssd_jax import convert_layouts  # noqa: E402  (no JAX needed)
from ssd_jax.testing import synthetic_state_dict  # noqa: E402  (NumPy-only at import time)

OUT = os.path.join(ROOT, "tests", "fixtures", "convert")
TV_CLASSES = 5
SP_CLASSES = 6
SEED = 0


def synthetic_image(size=300, seed=0) -> np.ndarray:
    """A deterministic RGB uint8 image: smooth gradients, a few flat rectangles, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([255 * x, 255 * y, 128 + 100 * np.sin(6 * x * y)], -1)
    for _ in range(6):
        x0, y0 = rng.integers(0, size - 60, 2)
        w, h = rng.integers(30, 120, 2)
        img[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
    img += rng.normal(0, 8, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def load_synthetic(module: nn.Module, source: str, num_classes=None):
    expected = convert_layouts.expected_shapes(source, num_classes)
    actual = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert actual == expected, (sorted(set(actual.items()) ^ set(expected.items())))
    state = {k: torch.from_numpy(v) for k, v in synthetic_state_dict(source, num_classes, SEED).items()}
    module.load_state_dict(state, strict=True)
    return actual


def stats(name, a):
    print(f"  {name}: shape {tuple(a.shape)}, std {a.std():.3f}, max |x| {np.abs(a).max():.3f}")


# ----------------------------------------------------------------------------- torchvision

@torch.no_grad()
def torchvision_fixture(image):
    from torchvision.models import vgg16
    from torchvision.models._meta import _COCO_CATEGORIES
    from torchvision.models.detection import ssd300_vgg16

    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=TV_CLASSES).eval()
    layout = load_synthetic(model, "torchvision_ssd300", TV_CLASSES)
    images = [torch.from_numpy(image).permute(2, 0, 1).float() / 255.0]
    image_list, _ = model.transform(images)
    features = list(model.backbone(image_list.tensors).values())
    head = model.head(features)
    anchors = model.anchor_generator(image_list, features)
    dets = model.postprocess_detections(head, anchors, image_list.image_sizes)
    dets = model.transform.postprocess(dets, image_list.image_sizes, [(300, 300)])[0]
    full = model(images)[0]  # the same through SSD.forward
    for k in ("boxes", "scores", "labels"):
        assert torch.equal(full[k], dets[k]), k
    out = dict(image=image, input=image_list.tensors[0].permute(1, 2, 0).numpy(),
               bbox_regression=head["bbox_regression"][0].numpy(), cls_logits=head["cls_logits"][0].numpy(),
               anchors=anchors[0].numpy(), boxes=dets["boxes"].numpy(), scores=dets["scores"].numpy(),
               labels=dets["labels"].numpy(), coco_categories=np.array(_COCO_CATEGORIES),
               transform_mean=np.array(model.transform.image_mean), transform_std=np.array(model.transform.image_std))
    print("torchvision ssd300_vgg16:")
    for k in ("input", "bbox_regression", "cls_logits", "scores"):
        stats(k, out[k])
    print(f"  {len(out['scores'])} detections, score range {out['scores'].min():.4f}..{out['scores'].max():.4f}")
    vgg_layout = {k: tuple(v.shape) for k, v in vgg16(weights=None).state_dict().items()}
    return out, {"torchvision_ssd300": layout, "vgg16_imagenet": vgg_layout}


# ----------------------------------------------------------------------------- ssd.pytorch (amdegroot)

def sp_vgg(cfg=(64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512), i=3):
    layers, c = [], i
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(2, 2)]
        elif v == "C":
            layers += [nn.MaxPool2d(2, 2, ceil_mode=True)]
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    layers += [nn.MaxPool2d(3, 1, 1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(inplace=True),
               nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True)]
    return layers


def sp_extras(cfg=(256, "S", 512, 128, "S", 256, 128, 256, 128, 256), i=1024):
    layers, c, flag = [], i, False
    for k, v in enumerate(cfg):
        if c != "S":
            if v == "S":
                layers += [nn.Conv2d(c, cfg[k + 1], (1, 3)[flag], stride=2, padding=1)]
            else:
                layers += [nn.Conv2d(c, v, (1, 3)[flag])]
            flag = not flag
        c = v
    return layers


class SPL2Norm(nn.Module):
    def __init__(self, n, scale):
        super().__init__()
        self.weight = nn.Parameter(torch.full((n,), float(scale)))
        self.eps = 1e-10

    def forward(self, x):
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return self.weight[None, :, None, None] * (x / norm)


class SPSSD(nn.Module):
    """ssd.pytorch ``build_ssd('test'/'train', 300, num_classes)`` without Detect / PriorBox."""

    def __init__(self, num_classes, mbox=(4, 6, 6, 6, 4, 4)):
        super().__init__()
        self.num_classes = num_classes
        self.vgg = nn.ModuleList(sp_vgg())
        self.L2Norm = SPL2Norm(512, 20)
        self.extras = nn.ModuleList(sp_extras())
        sources = [self.vgg[21].out_channels, self.vgg[-2].out_channels] + [e.out_channels for e in self.extras[1::2]]
        self.loc = nn.ModuleList([nn.Conv2d(c, k * 4, 3, padding=1) for c, k in zip(sources, mbox)])
        self.conf = nn.ModuleList([nn.Conv2d(c, k * num_classes, 3, padding=1) for c, k in zip(sources, mbox)])

    def forward(self, x):
        sources, loc, conf = [], [], []
        for k in range(23):
            x = self.vgg[k](x)
        sources.append(self.L2Norm(x))
        for k in range(23, len(self.vgg)):
            x = self.vgg[k](x)
        sources.append(x)
        for k, v in enumerate(self.extras):
            x = F.relu(v(x), inplace=True)
            if k % 2 == 1:
                sources.append(x)
        for x, loc_head, conf_head in zip(sources, self.loc, self.conf):
            loc.append(loc_head(x).permute(0, 2, 3, 1).contiguous())
            conf.append(conf_head(x).permute(0, 2, 3, 1).contiguous())
        loc = torch.cat([o.view(o.size(0), -1) for o in loc], 1)
        conf = torch.cat([o.view(o.size(0), -1) for o in conf], 1)
        return loc.view(loc.size(0), -1, 4), conf.view(conf.size(0), -1, self.num_classes)


def sp_priors(feature_maps=(38, 19, 10, 5, 3, 1), steps=(8, 16, 32, 64, 100, 300),
              min_sizes=(30, 60, 111, 162, 213, 264), max_sizes=(60, 111, 162, 213, 264, 315),
              aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)), image_size=300):
    """ssd.pytorch ``PriorBox(voc)``: (cx, cy, w, h), clipped to [0, 1]."""
    mean = []
    for k, f in enumerate(feature_maps):
        for i, j in itertools.product(range(f), repeat=2):
            f_k = image_size / steps[k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = min_sizes[k] / image_size
            mean += [cx, cy, s_k, s_k]
            s_kp = math.sqrt(s_k * (max_sizes[k] / image_size))
            mean += [cx, cy, s_kp, s_kp]
            for ar in aspect_ratios[k]:
                mean += [cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)]
                mean += [cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)]
    return torch.tensor(mean).view(-1, 4).clamp_(max=1, min=0).numpy()


@torch.no_grad()
def ssd_pytorch_fixture(image):
    model = SPSSD(SP_CLASSES).eval()
    layout = load_synthetic(model, "ssd_pytorch", SP_CLASSES)
    bgr = image[..., ::-1].astype(np.float32) - np.array([104, 117, 123], np.float32)
    loc, conf = model(torch.from_numpy(np.ascontiguousarray(bgr)).permute(2, 0, 1)[None])
    out = dict(image=image, loc=loc[0].numpy(), conf=conf[0].numpy(), priors=sp_priors())
    print("ssd.pytorch SSD300:")
    for k in ("loc", "conf"):
        stats(k, out[k])
    reduced = {k: tuple(v.shape) for k, v in model.vgg.state_dict().items()}  # = vgg16_reducedfc.pth keys
    return out, {"ssd_pytorch": layout, "vgg16_reducedfc": reduced}


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    image = synthetic_image()
    tv, tv_layouts = torchvision_fixture(image)
    sp, sp_layouts = ssd_pytorch_fixture(image)
    np.savez_compressed(os.path.join(OUT, "torchvision_ssd300.npz"), **tv)
    np.savez_compressed(os.path.join(OUT, "ssd_pytorch.npz"), **sp)
    layouts = {name: {"num_classes": {"torchvision_ssd300": TV_CLASSES, "ssd_pytorch": SP_CLASSES}.get(name),
                      "shapes": {k: list(v) for k, v in shapes.items()}}
               for name, shapes in {**tv_layouts, **sp_layouts}.items()}
    with open(os.path.join(OUT, "layouts.json"), "w") as f:
        json.dump(layouts, f, indent=0)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {OUT}: {total / 1e6:.2f} MB, torch {torch.__version__}")


if __name__ == "__main__":
    main()
