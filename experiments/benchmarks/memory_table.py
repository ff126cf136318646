"""Compiled peak memory of each model's training step, per device, from XLA's memory analysis.

    python experiments/benchmarks/memory_table.py                      # the default grid, resumable
    python experiments/benchmarks/memory_table.py --models ssd_tiny --batches 8 16 --dtypes bfloat16
    python experiments/benchmarks/memory_table.py --report-only        # rewrite the .md from the .json

For each model, per-device batch size and dtype this compiles the trainer's real step
(``ssd_jax.train_utils.make_train_step`` of the model's config: matching, forward, MultiBox loss,
backward, optimiser update, BatchNorm statistics; the state donated as ``ssd_jax.train`` does) for
one device with ``jax.jit(...).trace(...).lower(lowering_platforms=...).compile()`` on abstract
shapes (no array is allocated) and reads ``compiled.memory_analysis()``:

    peak = argument + output - alias + temp

(``argument``: the train state and batch; ``output``: the new state and metrics; ``alias``: the
outputs written into the donated state's buffers, counted once; ``temp``: XLA's scratch buffers
for activations kept for the backward pass, gradients and fusion intermediates). This is the
memory the step needs while it runs on one device; XLA:CPU's own ``peak_memory_in_bytes`` is
recorded too. Under data parallelism every device runs this program on its share of the global
batch with the params replicated, plus the gradient all-reduce's buffers (small next to this).

THESE ARE XLA:CPU ANALYSES, NOT ACCELERATOR MEASUREMENTS. Compiling for a GPU or TPU needs that
device's compiler. ``lowering_platforms=("cuda",)`` or ``("tpu",)`` does lower without a device
and ``.compile()`` then succeeds, but it compiles with the local (CPU) backend: the result is
the *accelerator graph* (our CPU-only kernels of ``ssd_jax/ops`` replaced by XLA's generic ops,
since ``lax.platform_dependent`` is resolved at lowering) with XLA:CPU's fusion and buffer
assignment. ``--graph generic`` (the default) measures that graph, ``--graph cpu`` the graph
XLA:CPU training actually runs (with Winograd transforms, strided views and hand-written
gradients). How a real accelerator differs is discussed in the .md this writes.

Models use their training configs with the dataset's class count given (no dataset is read):
ssd_tiny the ``shapes`` config (128 px, 4 classes, AdamW), ssd300_vgg16 ``ssd300_voc0712`` (21
classes, SGD momentum, conv1_1..conv2_2 frozen as in the recipe), ssd300_resnet50 the same
config with ``model=ssd300_resnet50`` and nothing frozen, ssdlite320_mobilenet_v2
``ssdlite320_mobilenet_v2_coco`` (81 classes). Rows already in the JSON are skipped, so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp

from ssd_jax import cli, data, xla_options
from ssd_jax.data.records import DatasetInfo
from ssd_jax.train_utils import build_task, init_state, make_train_step

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GIB = 2 ** 30
# name -> (config, overrides, class count, batches). The class count stands in for the dataset's.
MODELS = {
    "ssd300_vgg16": ("ssd300_voc0712", (), 21, (8, 16, 32)),
    "ssd300_resnet50": ("ssd300_voc0712", (("model", "ssd300_resnet50"), ("optimizer.frozen", "()")), 21,
                        (8, 16, 32)),
    "ssdlite320_mobilenet_v2": ("ssdlite320_mobilenet_v2_coco", (), 81, (8, 16, 32, 64)),
    "ssd_tiny": ("shapes", (), 4, (8, 16, 32, 64)),
}
# Memory per device the recommendation is made for (GiB), and the share of it a step may take.
DEVICES = {"T4 (15 GB usable)": 15, "A100 40 GB": 40, "TPU v2 core (8 GB)": 8, "TPU v3 core (16 GB)": 16}
MAX_POW2 = 10  # recommendations stop at 1024 per device (shown as 1024+)
HEADROOM = 0.8  # a step may use 80% of the device: the rest for the runtime, fragmentation, prefetched batches


def model_config(name: str, dtype: str):
    """The locked training config of ``name`` in ``dtype`` and its class count."""
    config_name, overrides, num_classes, _ = MODELS[name]
    config = cli.load_config(config_name, [*overrides, ("dtype", dtype)])
    return config, num_classes


def abstract_task_and_state(config, num_classes: int):
    """``(task, state)``: the trainer's task for ``config`` with ``num_classes`` placeholder classes
    (no dataset read) and ShapeDtypeStructs of its initial train state."""
    info = DatasetInfo(class_names=("background", *(f"c{i}" for i in range(1, num_classes))),
                       num_classes=num_classes, num_train=None, num_eval=None)
    with mock.patch.object(data, "dataset_info", lambda cfg: info):
        task = build_task(config)
    return task, jax.eval_shape(lambda: init_state(task, config.seed))


def abstract_step(config, num_classes: int, batch: int):
    """``(train_step, state, batch)``: the trainer's step and ShapeDtypeStructs of its arguments."""
    task, state = abstract_task_and_state(config, num_classes)
    h, w = task.spec.image_size
    m = config.data.max_boxes
    batch_shapes = dict(image=jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32),
                        boxes=jax.ShapeDtypeStruct((batch, m, 4), jnp.float32),
                        labels=jax.ShapeDtypeStruct((batch, m), jnp.int32),
                        mask=jax.ShapeDtypeStruct((batch, m), jnp.bool_))
    return make_train_step(task, config), state, batch_shapes


def _nbytes(tree) -> int:
    return sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def measure(name: str, batch: int, dtype: str, graph: str) -> dict:
    """One row: the memory analysis of ``name``'s step at per-device ``batch`` in ``dtype``."""
    config, num_classes = model_config(name, dtype)
    step, state, batch_shapes = abstract_step(config, num_classes, batch)
    platforms = ("cuda",) if graph == "generic" else ("cpu",)
    t0 = time.perf_counter()
    jitted = jax.jit(step, donate_argnums=(0,), compiler_options=xla_options.compiler_options("cpu"))
    compiled = jitted.trace(state, batch_shapes).lower(lowering_platforms=platforms).compile()
    compile_s = time.perf_counter() - t0
    m = compiled.memory_analysis()
    hlo = compiled.as_text()
    convs = re.findall(r"= (\w+)\[[^\]]*\][^=]*? convolution\(", hlo)
    peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    return dict(model=name, batch=batch, dtype=dtype, graph=graph, image_size=list(batch_shapes["image"].shape[1:3]),
                num_classes=num_classes, peak_bytes=int(peak), xla_peak_memory_bytes=int(m.peak_memory_in_bytes),
                argument_bytes=int(m.argument_size_in_bytes), output_bytes=int(m.output_size_in_bytes),
                alias_bytes=int(m.alias_size_in_bytes), temp_bytes=int(m.temp_size_in_bytes),
                params_bytes=_nbytes(state.params), opt_state_bytes=_nbytes(state.opt_state),
                conv_output_dtypes={d: convs.count(d) for d in sorted(set(convs))},
                compile_s=round(compile_s, 1))


def residual_bytes(name: str, batch: int, dtype: str) -> dict:
    """Bytes by dtype of the activations the network's forward saves for its backward pass.

    Counted on the jaxpr (``jax.ad_checkpoint``'s saved residuals, frozen params stopped as in the
    step), before any compiler: the same on every platform, so it shows what bfloat16 saves where
    convolutions run natively in bf16. XLA fuses, recomputes and reuses buffers after this, so it
    is not a peak (for ssd300_vgg16 it exceeds XLA:CPU's whole temp).
    """
    from jax._src.ad_checkpoint import saved_residuals

    config, num_classes = model_config(name, dtype)
    task, state = abstract_task_and_state(config, num_classes)
    h, w = task.spec.image_size

    def forward(params, batch_stats, images):
        if task.trainable is not None:
            params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, task.trainable)
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        (loc, logits), _ = task.module.apply(variables, images, train=True, mutable=["batch_stats"])
        return loc.sum() + logits.sum()

    by_dtype = {}
    images = jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32)
    for aval, why in saved_residuals(forward, state.params, state.batch_stats, images):
        if "from the argument" not in why:
            by_dtype[str(aval.dtype)] = by_dtype.get(str(aval.dtype), 0) + aval.size * aval.dtype.itemsize
    return by_dtype


def _key(row) -> tuple:
    return row["model"], row["batch"], row["dtype"], row["graph"]


def load(path: str) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"rows": []}


def save(path: str, table: dict) -> None:
    table["rows"].sort(key=lambda r: (list(MODELS).index(r["model"]) if r["model"] in MODELS else 99,
                                      r["graph"], r["dtype"], r["batch"]))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(table, f, indent=1)
    os.replace(tmp, path)


def fit_line(rows) -> tuple[float, float] | None:
    """Least-squares ``(fixed, per_image)`` bytes of peak vs batch (activations grow linearly)."""
    if len(rows) < 2:
        return None
    xs = [r["batch"] for r in rows]
    ys = [r["peak_bytes"] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def recommend(rows, gib: float) -> tuple[int, bool]:
    """Largest power-of-two per-device batch whose peak stays within ``HEADROOM`` of ``gib``.

    Returns ``(batch, extrapolated)``: measured rows decide where they reach; beyond the largest
    measured batch the linear fit of the measured rows does (``extrapolated`` True). 0: not even 1.
    """
    budget = HEADROOM * gib * GIB
    measured = {r["batch"]: r["peak_bytes"] for r in rows}
    fit = fit_line(rows)
    best, extrapolated = 0, False
    for b in (2 ** k for k in range(MAX_POW2 + 1)):
        peak = measured.get(b, fit[0] + fit[1] * b if fit else None)
        if peak is None:  # one measured row and no line: only that batch is known
            continue
        if peak > budget:
            break
        best, extrapolated = b, b > max(measured)
    return best, extrapolated


def report(table: dict) -> str:
    """The markdown report of ``table`` (the JSON's content)."""
    env = table.get("environment", {})
    lines = [
        "# Training-step memory per device (XLA:CPU compiled-memory analysis)",
        "",
        "**These are XLA:CPU compiled-memory analyses, not measurements on an accelerator.** Written by "
        "`python experiments/benchmarks/memory_table.py` (its docstring has the method).",
        f"Machine: {env.get('machine', '?')}; JAX {env.get('jax', '?')}, jaxlib {env.get('jaxlib', '?')}; "
        f"{env.get('date', '?')}.",
        "",
        "Per-device peak = argument + output - alias + temp bytes of the compiled training step (the "
        "trainer's `make_train_step`: matching, forward, loss, backward, optimiser update; state donated). "
        "Graph `generic`: lowered for `cuda` (the accelerator graph, XLA's generic ops) and compiled by "
        "XLA:CPU; `cpu`: the graph CPU training runs (CPU-only kernels of `ssd_jax/ops`). GiB = 2^30 bytes.",
        "",
        "| model | input | graph | dtype | per-device batch | peak GiB | temp GiB | params + opt state MiB | "
        "XLA:CPU peak_memory GiB | convolution outputs in the compiled HLO | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        convs = ", ".join(f"{v} {k}" for k, v in r["conv_output_dtypes"].items())
        lines.append(
            f"| {r['model']} | {r['image_size'][0]} px, {r['num_classes']} cl | {r['graph']} | {r['dtype']} | "
            f"{r['batch']} | {r['peak_bytes'] / GIB:.3f} | {r['temp_bytes'] / GIB:.3f} | "
            f"{(r['params_bytes'] + r['opt_state_bytes']) / 2 ** 20:.0f} | {r['xla_peak_memory_bytes'] / GIB:.3f} | "
            f"{convs} | {r['compile_s']} |")
    lines += ["", "## Recommended per-device batch", "",
              f"Rule: the largest power-of-two per-device batch whose peak (graph `generic`) is at most "
              f"{HEADROOM:.0%} of the device's memory (the rest for the runtime, allocator fragmentation, "
              "prefetched batches and the compiler differences below). Memory: "
              + ", ".join(f"{k} = {v} GiB" for k, v in DEVICES.items())
              + ". Batches beyond the largest compiled one come from a straight-line fit of peak against "
                "batch (marked *).", "",
              "| model | dtype | fixed MiB + MiB per image | " + " | ".join(DEVICES) + " |",
              "|---|---|---|" + "---|" * len(DEVICES)]
    groups = {}
    for r in table["rows"]:
        if r["graph"] == "generic":
            groups.setdefault((r["model"], r["dtype"]), []).append(r)
    for (model, dtype), rows in groups.items():
        fit = fit_line(rows)
        fit_s = f"{fit[0] / 2 ** 20:.0f} + {fit[1] / 2 ** 20:.1f}" if fit else "-"
        cells = []
        for gib in DEVICES.values():
            b, extra = recommend(rows, gib)
            cells.append(f"{b}{'+' if b == 2 ** MAX_POW2 else ''}{'*' if extra else ''}")
        lines.append(f"| {model} | {dtype} | {fit_s} | " + " | ".join(cells) + " |")
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


NOTES = """## How an accelerator will differ

- GPU and TPU memory cannot be analysed without that device's compiler: `jax.jit(f).trace(...).lower(
  lowering_platforms=("cuda",))` (or `("tpu",)`) works on a CPU-only machine, but `.compile()` then
  compiles with the local XLA:CPU backend, so buffer assignment, fusion and layouts here are XLA:CPU's.
  What the `generic` graph does get right is the program: `lax.platform_dependent` is resolved at
  lowering, so it has XLA's generic convolutions, pooling and BatchNorm as a GPU/TPU run has, not our
  CPU kernels (the `cpu` rows show what those kernels cost).
- bfloat16: XLA:CPU has no native bf16 convolution, so it computes bf16 convolutions in float32
  (the HLO column counts convolution output dtypes) and keeps float32 temporaries around them; a GPU or
  TPU runs them in bf16. Expect the real bf16 peak at or below these numbers (activations kept for
  the backward pass are bf16 there), and the f32 -> bf16 saving larger than it looks here.
  `memory_table.py --residuals` counts the activations the forward saves for the backward pass on the
  jaxpr, before any compiler (results/memory_residuals.md): bf16 keeps 0.55-0.61x the bytes of f32 for
  the three SSD300/320 models, so a GPU/TPU bf16 step should need roughly 0.6-0.7x the f32 peak.
- XLA:CPU's own `peak_memory_in_bytes` (a column above) equals the argument bytes here: it leaves out
  the temporaries, so it is not the step's peak; the formula above is.
- TPU pads every array's two minor dimensions to tiles (8 x 128 for f32, 16 x 128 for bf16): arrays
  with few channels (the RGB input, ssd_tiny's 32-64 channel maps, the 16-24 channel box heads) can
  take several times their size in HBM. Expect TPU peaks above these numbers for ssd_tiny and for
  the early, narrow layers; the wide VGG/ResNet layers (>= 128 channels) are unaffected.
- GPU: cuDNN convolution workspaces (chosen by autotuning, capped by XLA) come on top; fusions on GPU
  are larger, which tends to lower `temp`. JAX on GPU preallocates 75% of the card by default
  (`XLA_PYTHON_CLIENT_MEM_FRACTION=.75`): for the GPU recommendations above set it to 0.9.
- XLA on an accelerator rematerialises to fit memory when a program would not fit; XLA:CPU does not,
  so these peaks are for the program as written.
"""


def environment() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(machine=f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
                jax=jax.__version__, jaxlib=jax.lib.__version__ if hasattr(jax.lib, "__version__") else "?",
                python=sys.version.split()[0], date=datetime.date.today().isoformat(),
                note="XLA:CPU compiled-memory analyses, not accelerator measurements")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=None, help="default: each model's own grid")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--graph", nargs="+", default=["generic"], choices=["generic", "cpu"])
    p.add_argument("--out", default=os.path.join(RESULTS, "memory_table"), help="path without .json/.md")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--residuals", action="store_true",
                   help="print the forward's saved residuals (MiB by dtype) of --models at --batches, nothing else")
    args = p.parse_args(argv)
    if args.residuals:
        for name in args.models:
            for batch in args.batches or [8]:
                for dtype in args.dtypes:
                    mib = {k: round(v / 2 ** 20) for k, v in residual_bytes(name, batch, dtype).items()}
                    print(f"{name} batch {batch} {dtype}: residuals {sum(mib.values())} MiB {mib}", flush=True)
        return 0
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    path = args.out + ".json"
    table = load(path)
    table["environment"] = environment()
    done = {_key(r) for r in table["rows"]}
    jobs = [(graph, name, batch, dtype) for graph in args.graph for name in args.models
            for batch in args.batches or MODELS[name][3] for dtype in args.dtypes]
    # the smallest and largest batch of each model first (they give the line), the rest after
    jobs.sort(key=lambda j: (j[0] != args.graph[0], j[2] not in (min(MODELS[j[1]][3]), max(MODELS[j[1]][3]))))
    for graph, name, batch, dtype in [] if args.report_only else jobs:
        if (name, batch, dtype, graph) in done:
            continue
        row = measure(name, batch, dtype, graph)
        print(f"{name} batch {batch} {dtype} {graph}: peak {row['peak_bytes'] / GIB:.3f} GiB "
              f"(temp {row['temp_bytes'] / GIB:.3f}), compiled in {row['compile_s']} s", flush=True)
        table["rows"].append(row)
        save(path, table)
        with open(args.out + ".md", "w") as f:
            f.write(report(table))
    save(path, table)
    with open(args.out + ".md", "w") as f:
        f.write(report(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
