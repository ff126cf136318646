"""Benchmark SSD models: forward and training-step throughput on this machine.

    python experiments/benchmarks/bench_models.py [--models ssd300_vgg16:4 ssd_tiny:32] [--rounds 7]

For each ``name:batch``: forward images/s (train=False) and training-step images/s
(forward + backward + SGD-momentum update, train=True with BatchNorm updates), after
compilation, with FLOPs per image from XLA's ``cost_analysis()`` and achieved GFLOP/s.
The loss is a stand-in (mean squares of the outputs): its cost is negligible next to the
network. When torch/torchvision are importable, torchvision's ``ssd300_vgg16`` network
(backbone + head, no pre/post-processing) is timed the same way, call for call
interleaved with ours (so both see the same machine load), and the ratio printed, for two
training set-ups: every layer trained, and the Caffe recipe's conv1_1 .. conv2_2 frozen
(``configs.CAFFE_VGG16_FROZEN``; torchvision: ``requires_grad=False`` on the same layers).
Times are medians over the rounds.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from timing import interleaved_medians

from ssd_jax import models, optim, xla_options
from ssd_jax.configs._base import CAFFE_VGG16_FROZEN


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def jax_model(name: str, batch: int, num_classes: int = 21, dtype=None, xla_defaults=False, frozen=()):
    """``(forward, train_step, info)``: two no-argument callables that block until done.

    ``frozen``: module paths that get no gradient (as ``config.optimizer.frozen`` in training).
    """
    module, spec = models.create(name, num_classes, dtype=dtype)
    h, w = spec.image_size
    images = jax.random.normal(jax.random.PRNGKey(1), (batch, h, w, 3), jnp.float32)
    variables = jax.jit(lambda k: module.init(k, images[:1], train=False))(jax.random.key(0, impl="rbg"))
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    opt = optax.sgd(1e-3, momentum=0.9)
    opt_state = opt.init(params)
    trainable = optim.trainable_params_mask(params, frozen)

    def forward(params, state, images):
        return module.apply({"params": params, **state}, images, train=False)

    def loss_fn(params, state, images):
        params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, trainable)
        (loc, logits), updates = module.apply({"params": params, **state}, images, train=True,
                                              mutable=list(state.keys()))
        return jnp.mean(loc ** 2) + jnp.mean(logits ** 2), updates

    def train_step(params, state, opt_state, images):
        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, images)
        upd, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), {**state, **updates}, opt_state, loss

    options = None if xla_defaults else xla_options.compiler_options()
    t0 = time.perf_counter()
    fwd = jax.jit(forward, compiler_options=options).lower(params, state, images).compile()
    step = jax.jit(train_step, donate_argnums=(0, 1, 2), compiler_options=options).lower(
        params, state, opt_state, images).compile()
    info = dict(name=name, batch=batch, size=(h, w), compile_s=time.perf_counter() - t0,
                params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)),
                fwd_flops=_flops(fwd) / batch, step_flops=_flops(step) / batch)
    carry = [params, state, opt_state]

    def run_step():
        carry[0], carry[1], carry[2], loss = step(*carry, images)
        jax.block_until_ready(loss)

    return (lambda: jax.block_until_ready(fwd(carry[0], carry[1], images))), run_step, info


def torchvision_model(batch: int, num_classes: int = 21, frozen_features: int = 0):
    """Torchvision ssd300_vgg16 ``(forward, train_step)``, or None when torchvision is missing.

    ``frozen_features``: how many modules of ``backbone.features`` get ``requires_grad=False``
    (10 = conv1_1 .. conv2_2 with their ReLUs and pools).
    """
    try:
        import torch
        import torchvision
    except ImportError:
        print("torchvision not importable: skipping the torchvision comparison")
        return None
    torch.manual_seed(0)
    net = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes)
    for module in list(net.backbone.features)[:frozen_features]:
        module.requires_grad_(False)
    images = torch.randn(batch, 3, 300, 300)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

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

    return fwd, step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ssd300_vgg16:4", "ssd_tiny:32"], help="name:batch")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--xla-defaults", action="store_true",
                        help="compile with jaxlib's default options instead of ssd_jax.xla_options")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 compute")
    args = parser.parse_args()
    print(f"compiler options: {None if args.xla_defaults else xla_options.compiler_options()}")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {len(jax.devices())} device(s), "
          f"medians of {args.rounds} rounds")
    for item in args.models:
        name, batch = item.split(":") if ":" in item else (item, "4")
        batch = int(batch)
        fwd, step, info = jax_model(name, batch, args.num_classes, dtype=jnp.bfloat16 if args.bf16 else None,
                                    xla_defaults=args.xla_defaults)
        fns = {"forward": fwd, "train": step}
        kinds = [("forward", info["fwd_flops"]), ("train", info["step_flops"])]
        tv = torchvision_model(batch, args.num_classes) if name == "ssd300_vgg16" else None
        if tv is not None:
            import torch
            print(f"torchvision ssd300_vgg16 (torch {torch.__version__}, {torch.get_num_threads()} threads)")
            _, fns["train_caffe_frozen"], frozen_info = jax_model(
                name, batch, args.num_classes, dtype=jnp.bfloat16 if args.bf16 else None,
                xla_defaults=args.xla_defaults, frozen=CAFFE_VGG16_FROZEN)
            kinds.append(("train_caffe_frozen", frozen_info["step_flops"]))
            fns.update(tv_forward=tv[0], tv_train=tv[1],
                       tv_train_caffe_frozen=torchvision_model(batch, args.num_classes, frozen_features=10)[1])
        t = interleaved_medians(fns, args.rounds)
        h, w = info["size"]
        print(f"{name} batch {batch} {h}x{w} ({info['params']:,} params, compile {info['compile_s']:.1f} s)")
        for kind, flops in kinds:
            print(f"  {kind:18s}: {t[kind] * 1e3:8.1f} ms/batch {batch / t[kind]:8.1f} img/s  "
                  f"{flops / 1e9:6.2f} GFLOP/img  {flops * batch / t[kind] / 1e9:6.1f} GFLOP/s")
            if tv is not None:
                tk = t["tv_" + kind]
                print(f"  {'torchvision':18s}: {tk * 1e3:8.1f} ms/batch {batch / tk:8.1f} img/s  "
                      f"-> ours / torchvision {tk / t[kind]:.2f}x")


if __name__ == "__main__":
    main()
