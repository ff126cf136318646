"""Benchmark SSD models: forward and training-step throughput on this machine.

    python experiments/benchmarks/bench_models.py [--models ssd300_vgg16:4 ssd_tiny:32] [--iters 5]

For each ``name:batch``: forward images/s (train=False) and training-step images/s
(forward + backward + SGD-momentum update, train=True with BatchNorm updates), after
compilation, with FLOPs per image from XLA's ``cost_analysis()`` and achieved GFLOP/s.
The loss is a stand-in (mean squares of the outputs): its cost is negligible next to the
network. When torch/torchvision are importable, torchvision's ``ssd300_vgg16`` network
(backbone + head, no pre/post-processing) is timed the same way and the ratio printed.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssd_jax import models
from ssd_jax.models import layers


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _time(fn, iters):
    fn()  # warm-up after compilation
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def bench_jax(name: str, batch: int, iters: int, num_classes: int = 21, dtype=None):
    module, spec = models.create(name, num_classes, dtype=dtype)
    h, w = spec.image_size
    images = jax.random.normal(jax.random.PRNGKey(1), (batch, h, w, 3), jnp.float32)
    variables = jax.jit(lambda k: module.init(k, images[:1], train=False))(jax.random.key(0, impl="rbg"))
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    opt = optax.sgd(1e-3, momentum=0.9)
    opt_state = opt.init(params)

    def forward(params, state, images):
        return module.apply({"params": params, **state}, images, train=False)

    def loss_fn(params, state, images):
        (loc, logits), updates = module.apply({"params": params, **state}, images, train=True,
                                              mutable=list(state.keys()))
        return jnp.mean(loc ** 2) + jnp.mean(logits ** 2), updates

    def train_step(params, state, opt_state, images):
        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, images)
        upd, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), {**state, **updates}, opt_state, loss

    t0 = time.perf_counter()
    fwd = jax.jit(forward).lower(params, state, images).compile()
    step = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(params, state, opt_state, images).compile()
    compile_s = time.perf_counter() - t0
    fwd_flops, step_flops = _flops(fwd) / batch, _flops(step) / batch

    t_fwd = _time(lambda: jax.block_until_ready(fwd(params, state, images)), iters)
    carry = [params, state, opt_state]

    def run_step():
        carry[0], carry[1], carry[2], loss = step(*carry, images)
        jax.block_until_ready(loss)

    t_step = _time(run_step, iters)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    print(f"{name} batch {batch} {h}x{w} ({n_params:,} params, compile {compile_s:.1f} s)")
    print(f"  forward: {t_fwd * 1e3:8.1f} ms/batch {batch / t_fwd:8.1f} img/s  "
          f"{fwd_flops / 1e9:6.2f} GFLOP/img  {fwd_flops * batch / t_fwd / 1e9:6.1f} GFLOP/s")
    print(f"  train  : {t_step * 1e3:8.1f} ms/batch {batch / t_step:8.1f} img/s  "
          f"{step_flops / 1e9:6.2f} GFLOP/img  {step_flops * batch / t_step / 1e9:6.1f} GFLOP/s")
    return batch / t_fwd, batch / t_step


def bench_torchvision(batch: int, iters: int, num_classes: int = 21):
    """Torchvision ssd300_vgg16 network throughput, or None when torchvision is missing."""
    try:
        import torch
        import torchvision
    except ImportError:
        print("torchvision not importable: skipping the torchvision comparison")
        return None
    torch.manual_seed(0)
    net = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes)
    images = torch.randn(batch, 3, 300, 300)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def fwd():
        with torch.no_grad():
            net.eval()
            net.head(list(net.backbone(images).values()))

    def step():
        net.train()
        out = net.head(list(net.backbone(images).values()))
        loss = out["bbox_regression"].pow(2).mean() + out["cls_logits"].pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    fwd()
    step()
    t_fwd, t_step = _time(fwd, iters), _time(step, iters)
    print(f"torchvision ssd300_vgg16 batch {batch} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"  forward: {t_fwd * 1e3:8.1f} ms/batch {batch / t_fwd:8.1f} img/s")
    print(f"  train  : {t_step * 1e3:8.1f} ms/batch {batch / t_step:8.1f} img/s")
    return batch / t_fwd, batch / t_step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ssd300_vgg16:4", "ssd_tiny:32"], help="name:batch")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--conv-grad", choices=["fast", "xla"], default="fast",
                        help="conv weight gradient: per-tap matmuls (layers.FAST_WEIGHT_GRAD) or XLA's")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 compute")
    args = parser.parse_args()
    layers.FAST_WEIGHT_GRAD = args.conv_grad == "fast"
    print(f"conv weight gradient: {args.conv_grad}")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {len(jax.devices())} device(s)")
    results = {}
    for item in args.models:
        name, batch = item.split(":") if ":" in item else (item, "4")
        results[name] = bench_jax(name, int(batch), args.iters, args.num_classes, dtype=jnp.bfloat16 if args.bf16 else None)
    if "ssd300_vgg16" in results:
        batch = int(dict(m.split(":") for m in args.models if ":" in m).get("ssd300_vgg16", 4))
        tv = bench_torchvision(batch, args.iters, args.num_classes)
        if tv is not None:
            ours = results["ssd300_vgg16"]
            print(f"ours / torchvision: forward {ours[0] / tv[0]:.2f}x, train step {ours[1] / tv[1]:.2f}x")


if __name__ == "__main__":
    main()
