"""Accelerator benchmark: the SSD training step against torchvision's, and the Detector's latency.

    python experiments/benchmarks/bench_accelerator.py --out train.json --parts train
    python experiments/benchmarks/bench_accelerator.py --out detector.json --parts detector
    # smoke run on CPU (seconds, no GPU needed):
    python experiments/benchmarks/bench_accelerator.py --device cpu --model ssd_tiny --batch 2 --steps 2 \
        --rounds 2 --out smoke.json

``train``: the trainer's own step (``train_utils.make_train_step``: matching, MultiBox loss with
hard negative mining, backward, the config's optimiser; ``ssd300_voc0712``'s SGD with
conv1_1 .. conv2_2 frozen for ``ssd300_vgg16``) jit-compiled as ``ssd_jax.train`` does, over a
``data`` mesh of every device with ``--batch`` images per device, in float32 and bfloat16
(``config.dtype``), at learning rate ``--lr`` (default 0, see its help). In the same process,
call for call interleaved (``timing.interleaved_medians``), torchvision's ``ssd300_vgg16``
training step on one device (``model(images, targets)`` with its transform, matcher and loss;
SGD momentum 0.9, weight decay 5e-4, ``--lr``, the same layers frozen) in float32 and under
``torch.autocast`` (bfloat16 by default), both with ``channels_last`` weights and
``cudnn.benchmark``. Each timed call runs ``--steps`` steps and then waits for the device
(``block_until_ready`` / ``torch.cuda.synchronize``); the medians of ``--rounds`` calls are
reported per step. The same random pixels and 1-8 random boxes per image for both, random-init
weights.

``detector``: :class:`ssd_jax.Detector` end to end (host resize of 500x375 uint8 photos, jitted
normalise + network + post-processing, results back on the host) at batch 1 and 8, with the
share of host preprocessing (``bench_detector.ssd_jax_calls``).

The JSON (``--out``) is rewritten after every measurement, so a run stopped by a timeout keeps
what it finished. A part that fails records ``{"error": ...}`` and the script exits 1; torch or
torchvision missing is not an error: ``train.torchvision`` then holds ``{"skipped": reason}``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback

# ssd300_vgg16 -> the paper's recipe; other models -> the config that trains them.
DEFAULT_CONFIGS = {"ssd300_vgg16": "ssd300_voc0712", "ssd512_vgg16": "ssd512_voc0712", "ssd_tiny": "shapes",
                   "ssdlite320_mobilenet_v2": "ssdlite320_mobilenet_v2_coco"}
TORCH_FROZEN_FEATURES = 10  # backbone.features[:10] = conv1_1 .. conv2_2 with ReLUs and pools (CAFFE_VGG16_FROZEN)


class Report:
    """A JSON document written to ``path`` (atomically) after every change."""

    def __init__(self, path: str | None, doc: dict):
        self.path, self.doc = path, doc
        self.save()

    def save(self):
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.doc, f, indent=2, default=str)
            os.replace(tmp, self.path)


def random_batch(batch: int, image_size, max_boxes: int, num_classes: int, seed: int = 0) -> dict:
    """A batch as the input pipeline makes it, before normalisation: pixels uint8 ``[B, H, W, 3]``,
    boxes float32 ``[B, M, 4]`` normalised corners, labels int32 ``[B, M]`` (1..C-1, 0 in padding),
    mask bool ``[B, M]``; 1..min(8, M) boxes per image, valid ones first."""
    import numpy as np

    rng = np.random.default_rng(seed)
    boxes = np.zeros((batch, max_boxes, 4), np.float32)
    labels = np.zeros((batch, max_boxes), np.int32)
    mask = np.zeros((batch, max_boxes), bool)
    for i in range(batch):
        n = int(rng.integers(1, min(8, max_boxes) + 1))
        centre = rng.uniform(0.2, 0.8, (n, 2))
        size = rng.uniform(0.05, 0.5, (n, 2))
        boxes[i, :n] = np.clip(np.concatenate([centre - size / 2, centre + size / 2], 1), 0, 1)
        labels[i, :n] = rng.integers(1, num_classes, n)
        mask[i, :n] = True
    pixels = rng.integers(0, 256, (batch, *image_size, 3), dtype=np.uint8)
    return dict(pixels=pixels, boxes=boxes, labels=labels, mask=mask)


def build_task(config, num_classes: int):
    """``train_utils.Task`` of ``config`` for ``num_classes`` classes, without reading the dataset
    (``train_utils.build_task`` asks the data source for its classes, which needs TensorFlow)."""
    import jax
    import jax.numpy as jnp

    from ssd_jax import anchors, models, optim
    from ssd_jax.train_utils import Task

    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]
    module, spec = models.create(config.model, num_classes, dtype=dtype, image_size=config.image_size,
                                 anchors=config.get("anchors"), options=config.get("model_options"))
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, *spec.image_size, 3)),
                                                train=False))["params"]
    trainable = optim.trainable_mask(config.optimizer, shapes)
    return Task(module=module, spec=spec, anchors=anchors.default_boxes(spec),
                tx=optim.make_optimizer(config.optimizer, shapes, config.num_steps, trainable),
                class_names=("background", *(f"c{i}" for i in range(1, num_classes))),
                normalization=models.input_normalization(config.model), trainable=trainable)


def ssd_jax_train(config, num_classes: int, data: dict, steps: int):
    """``(call, info, finish)``: ``call()`` runs ``steps`` training steps and blocks until they are done;
    ``finish()`` reads the last loss and the peak device memory. ``data``: ``random_batch`` of the
    global batch (``per-device batch x devices`` images) at the model's input size."""
    import jax
    import numpy as np
    from bench_models import _flops
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from ssd_jax import xla_options
    from ssd_jax.data import normalize
    from ssd_jax.train_utils import init_state, make_mesh, make_train_step

    task = build_task(config, num_classes)
    mesh = make_mesh()
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    batch, h, w = len(data["pixels"]), *task.spec.image_size
    images = normalize(data["pixels"], task.normalization)
    arrays = jax.device_put(dict(image=images, boxes=data["boxes"], labels=data["labels"], mask=data["mask"]),
                            sharded)
    state = jax.jit(lambda: init_state(task, config.seed), out_shardings=replicated)()
    t0 = time.perf_counter()
    step = jax.jit(make_train_step(task, config), donate_argnums=(0,), out_shardings=(replicated, replicated),
                   compiler_options=xla_options.compiler_options()).lower(state, arrays).compile()
    info = dict(global_batch=batch, image_size=[h, w], compile_s=round(time.perf_counter() - t0, 3),
                gflop_per_step=_flops(step) / 1e9)
    carry = {"state": state, "metrics": None}

    def call():
        for _ in range(steps):
            carry["state"], carry["metrics"] = step(carry["state"], arrays)
        jax.block_until_ready(carry["metrics"])

    def finish():
        loss = float(carry["metrics"]["loss"])
        memory = jax.devices()[0].memory_stats() or {}
        return dict(final_loss=loss, loss_finite=bool(np.isfinite(loss)),
                    peak_bytes_device0=memory.get("peak_bytes_in_use"))

    return call, info, finish


def torch_status(device: str):
    """``(torch, torchvision, torch device)`` or ``(None, None, reason)`` when they cannot be used."""
    try:
        import torch
        import torchvision
    except Exception as e:  # ImportError, or a broken build (e.g. torchvision's ops not loading)
        return None, None, f"torch/torchvision not importable: {type(e).__name__}: {e}"
    if device == "cpu":
        return torch, torchvision, "cpu"
    if not torch.cuda.is_available():
        return None, None, f"torch {torch.__version__} sees no CUDA device (torch.version.cuda={torch.version.cuda})"
    return torch, torchvision, "cuda"


def torchvision_train(torch, torchvision, device: str, steps: int, data: dict, num_classes: int, lr: float,
                      amp_dtype=None):
    """``(call, finish)`` for torchvision's ssd300_vgg16 training step on ``device``.

    ``data``: ``random_batch`` of its images (300x300): pixels become [0, 1] floats (torchvision's
    transform normalises them as ours does, Caffe means), boxes pixel corners.
    ``amp_dtype``: None (float32) or a torch dtype for ``torch.autocast`` (float16 adds a GradScaler).
    """
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    net = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes)
    net = net.to(device).to(memory_format=torch.channels_last).train()
    for module in list(net.backbone.features)[:TORCH_FROZEN_FEATURES]:
        module.requires_grad_(False)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                          weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device, enabled=amp_dtype == torch.float16)
    images = [(torch.from_numpy(p).permute(2, 0, 1).float() / 255).to(device) for p in data["pixels"]]
    h, w = data["pixels"].shape[1:3]
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes, labels, mask = data["boxes"], data["labels"], data["mask"]
    gt = [dict(boxes=(torch.from_numpy(boxes[i][mask[i]]) * scale).to(device),
               labels=torch.from_numpy(labels[i][mask[i]]).long().to(device)) for i in range(len(images))]
    last = {}

    def call():
        for _ in range(steps):
            with torch.autocast(device, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                loss = sum(net(images, gt).values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if device == "cuda":
            torch.cuda.synchronize()
        last["loss"] = loss.detach()

    def finish():
        loss = float(last["loss"])
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
        return dict(final_loss=loss, loss_finite=bool(loss == loss and abs(loss) != float("inf")),
                    peak_bytes_device0=peak)

    return call, finish


def run_train(args, report: Report, on_gpu: bool):
    """Compiles and times the variants, writing ``report.doc["train"]`` as results come in."""
    import jax
    from timing import interleaved_medians

    from ssd_jax import configs, models

    section = report.doc["train"] = dict(
        model=args.model, config=args.config, num_classes=args.num_classes, per_device_batch=args.batch, lr=args.lr,
        steps_per_call=args.steps, rounds=args.rounds, jax_default_matmul_precision=str(
            jax.config.jax_default_matmul_precision), ssd_jax={}, torchvision={})
    report.save()
    calls, finishers = {}, {}
    config = configs.load(args.config)
    size = models.create(args.model, args.num_classes, image_size=config.image_size)[1].image_size
    data = random_batch(args.batch * jax.device_count(), size, config.data.max_boxes or 8, args.num_classes)
    for dtype in args.dtypes:
        config = configs.load(args.config)
        config.model, config.dtype, config.optimizer.lr = args.model, dtype, args.lr
        call, info, finish = ssd_jax_train(config, args.num_classes, data, args.steps)
        section["ssd_jax"][dtype] = info
        report.save()
        calls[("ssd_jax", dtype)], finishers[("ssd_jax", dtype)] = call, finish

    torch, torchvision, where = torch_status("cpu" if not on_gpu else "cuda")
    if args.no_torch:
        section["torchvision"] = {"skipped": "--no-torch"}
    elif torch is None:
        section["torchvision"] = {"skipped": where}
    elif args.model != "ssd300_vgg16":
        section["torchvision"] = {"skipped": f"torchvision has no {args.model}; the comparison is for ssd300_vgg16"}
    else:
        amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}[args.torch_amp]
        tv_data = {k: v[:args.batch] for k, v in data.items()}  # one device's share
        section["torchvision"] = dict(
            torch=torch.__version__, torchvision=torchvision.__version__, cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if where == "cuda" else None, device=where,
            batch=args.batch, channels_last=True, cudnn_benchmark=True,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32, threads=torch.get_num_threads(), variants={})
        for name, dtype in (("float32", None), (f"amp_{args.torch_amp}", amp)):
            call, finish = torchvision_train(torch, torchvision, where, args.steps, tv_data, args.num_classes,
                                             args.lr, amp_dtype=dtype)
            t0 = time.perf_counter()
            call()
            section["torchvision"]["variants"][name] = dict(first_call_s=round(time.perf_counter() - t0, 3))
            calls[("torchvision", name)], finishers[("torchvision", name)] = call, finish
        report.save()

    medians = interleaved_medians(calls, args.rounds, pause_s=args.pause)
    for key, seconds in medians.items():
        per_step = seconds / args.steps
        images = args.batch * (jax.device_count() if key[0] == "ssd_jax" else 1)
        entry = section[key[0]][key[1]] if key[0] == "ssd_jax" else section["torchvision"]["variants"][key[1]]
        entry.update(ms_per_step=round(per_step * 1e3, 3), images_per_s=round(images / per_step, 2),
                     images_per_s_per_device=round(args.batch / per_step, 2), **finishers[key]())
        if "gflop_per_step" in entry:
            entry["achieved_tflop_per_s"] = round(entry["gflop_per_step"] / per_step / 1e3, 4)
    if section["torchvision"].get("variants"):
        tv = section["torchvision"]["variants"]
        section["speedup_vs_torchvision"] = {
            f"ssd_jax {d} vs torchvision {v}": round(tv[v]["ms_per_step"] / section["ssd_jax"][d]["ms_per_step"], 3)
            for d in section["ssd_jax"] for v in tv}
    report.save()


def run_detector(args, report: Report):
    """``report.doc["detector"]``: ms/call, images/s, first-call (compile) time, host share, batch 1 and 8."""
    import numpy as np
    from bench_detector import ssd_jax_calls
    from timing import interleaved_medians

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(8)]
    section = report.doc["detector"] = dict(model=args.model, image_hw=[375, 500], rounds=args.rounds, batches={})
    report.save()
    calls, pre = ssd_jax_calls(args.model, images)
    for (_, b), call in calls.items():
        t0 = time.perf_counter()
        call()
        section["batches"][str(b)] = dict(first_call_s=round(time.perf_counter() - t0, 3))
        report.save()
    t = interleaved_medians(calls, args.rounds, pause_s=args.pause)
    tp = interleaved_medians(pre, args.rounds, pause_s=0.0)
    for (name, b), seconds in t.items():
        section["batches"][str(b)].update(
            ms_per_call=round(seconds * 1e3, 3), images_per_s=round(b / seconds, 2),
            host_preprocess_ms=round(tp[name, b] * 1e3, 3), host_preprocess_share=round(tp[name, b] / seconds, 4))
    report.save()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="JSON file to write (rewritten after every measurement)")
    p.add_argument("--parts", nargs="+", choices=("train", "detector"), default=["train", "detector"])
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="cpu: JAX_PLATFORMS=cpu and torch on CPU (smoke runs); gpu: fail unless JAX has a GPU")
    p.add_argument("--model", default="ssd300_vgg16")
    p.add_argument("--config", help="training config for the step (default: the model's, e.g. ssd300_voc0712)")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--batch", type=int, default=32, help="images per device")
    p.add_argument("--steps", type=int, default=10, help="training steps per timed call")
    p.add_argument("--rounds", type=int, default=5, help="timed calls of each variant (medians reported)")
    p.add_argument("--dtypes", nargs="*", choices=("float32", "bfloat16"), default=["float32", "bfloat16"],
                   help="compute dtypes of our step (none: torchvision alone)")
    p.add_argument("--lr", type=float, default=0.0,
                   help="learning rate of both steps (default 0: random-init SSD300 diverges from scratch at the "
                        "recipe's 1e-3, and with 0 every timed step does the same work on finite numbers)")
    p.add_argument("--torch-amp", choices=("bfloat16", "float16"), default="bfloat16")
    p.add_argument("--no-torch", action="store_true", help="skip the torchvision comparison")
    p.add_argument("--pause", type=float, help="seconds between timed calls (default 0.3 on CPU, 0 on GPU)")
    args = p.parse_args(argv)
    args.config = args.config or DEFAULT_CONFIGS.get(args.model)
    if args.config is None:
        p.error(f"no default config for --model {args.model}; pass --config")
    if min(args.batch, args.steps, args.rounds) < 1:
        p.error("--batch, --steps and --rounds must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # timing, bench_models, bench_detector
    import jax

    devices = jax.devices()
    on_gpu = devices[0].platform == "gpu"
    if args.device == "gpu" and not on_gpu:
        print(f"error: --device gpu but JAX's devices are {devices}", file=sys.stderr)
        return 2
    if args.pause is None:
        args.pause = 0.0 if on_gpu else 0.3
    report = Report(args.out, dict(
        argv=sys.argv[1:], python=platform.python_version(), jax=jax.__version__,
        jaxlib=importlib.metadata.version("jaxlib"), backend=jax.default_backend(),
        devices=[f"{d.platform}:{d.id} {d.device_kind}" for d in devices], device_count=len(devices)))
    failed = False
    for part in args.parts:
        t0 = time.perf_counter()
        try:
            run_train(args, report, on_gpu) if part == "train" else run_detector(args, report)
        except Exception as e:
            failed = True
            traceback.print_exc()
            report.doc.setdefault(part, {})["error"] = f"{type(e).__name__}: {e}"
        report.doc.setdefault(part, {})["wall_s"] = round(time.perf_counter() - t0, 2)
        report.save()
        print(json.dumps({part: report.doc[part]}, indent=1, default=str), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
