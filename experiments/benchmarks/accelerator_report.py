"""The pieces of ``accelerator.sh``'s JSON that are not timings: the environment probe and the merge.

    python accelerator_report.py probe OUT/probe.json          # versions, devices (never fails)
    python accelerator_report.py merge OUT [--quickstart-workdir DIR]   # -> OUT/accelerator.json

``merge`` reads what the script left in ``OUT``: ``phases.tsv`` (phase, exit code, seconds, note),
``nvidia_smi.txt``, ``probe.json``, ``quickstart.log``, ``train.json`` and ``detector.json``; any of
them may be missing (a phase skipped, stopped by its timeout, or failed), which the JSON then says,
with the last lines of a failed phase's log.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import statistics
import sys

PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt",
            "flax", "optax", "orbax-checkpoint", "ml-collections", "tensorflow", "tensorflow-cpu", "torch",
            "torchvision", "ssd_jax")


def probe() -> dict:
    """Installed versions, JAX's devices and torch's CUDA view; errors are recorded, not raised."""
    out = {"python": sys.version.split()[0], "executable": sys.executable, "packages": {}}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out["packages"][name] = importlib.metadata.version(name)
    try:
        import ssd_jax
        out["ssd_jax_path"] = os.path.dirname(ssd_jax.__file__)
    except Exception as e:
        out["ssd_jax_error"] = f"{type(e).__name__}: {e}"
    try:
        import jax
        out["jax_backend"] = jax.default_backend()
        out["jax_devices"] = [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]
    except Exception as e:
        out["jax_error"] = f"{type(e).__name__}: {e}"
    try:
        import torch
        out["torch_cuda"] = torch.version.cuda
        out["torch_cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            out["torch_device"] = torch.cuda.get_device_name(0)
    except Exception as e:
        out["torch_error"] = f"{type(e).__name__}: {e}"
    return out


LOG_TAIL_LINES = 6  # of a failed phase's log, into the JSON

_PROGRESS = re.compile(r"^step (\d+)/(\d+) \| loss ([\d.]+).*\| ([\d.]+) img/s")
_EVAL = re.compile(r"^\[eval\] step (\d+): VOC mAP@0.5 ([\d.]+)(?:, COCO AP ([\d.]+))?")
_DONE = re.compile(r"^trained (\d+) steps in (\S+); final VOC mAP@0.5 ([\d.]+)")


def parse_quickstart(log: str) -> dict:
    """The trainer's progress, evaluation and closing lines from its log (``ssd_jax.train`` output).

    ``images_per_s_median``: median over the progress lines after the first (which includes compilation).
    """
    progress, evals, out = [], [], {}
    for line in log.splitlines():
        line = line.strip()
        if line.startswith("training "):
            out["header"] = line
        elif m := _PROGRESS.match(line):
            progress.append(dict(step=int(m[1]), of=int(m[2]), loss=float(m[3]), images_per_s=float(m[4])))
        elif m := _EVAL.match(line):
            evals.append(dict(step=int(m[1]), voc_map50=float(m[2]), coco_ap=float(m[3]) if m[3] else None))
        elif m := _DONE.match(line):
            out.update(trained_steps=int(m[1]), training_time=m[2], final_voc_map50=float(m[3]))
    if progress:
        out["last_progress"] = progress[-1]
        rates = [p["images_per_s"] for p in progress[1:]] or [progress[0]["images_per_s"]]
        out["images_per_s_median"] = statistics.median(rates)
    out["evals"] = evals
    out["completed"] = "final_voc_map50" in out
    return out


def _read(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    if not path.endswith(".json"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return {"error": f"unreadable JSON ({e})"}


def merge(out_dir: str, quickstart_workdir: str | None = None) -> dict:
    """``accelerator.json``'s content from the files the script left in ``out_dir``."""
    phases = {}
    for line in (_read(os.path.join(out_dir, "phases.tsv")) or "").splitlines():
        name, rc, wall, *note = line.split("\t")
        phases[name] = dict(rc=int(rc) if rc.lstrip("-").isdigit() else rc, wall_s=float(wall),
                            note=note[0] if note else "")
    for name, phase in phases.items():  # why a phase failed, without opening its log
        log_text = _read(os.path.join(out_dir, f"{name}.log"))
        if phase["rc"] not in (0, "skipped") and log_text:
            phase["log_tail"] = [line for line in log_text.splitlines() if line.strip()][-LOG_TAIL_LINES:]
    doc = dict(phases=phases, total_wall_s=round(sum(p["wall_s"] for p in phases.values()), 1),
               nvidia_smi=_read(os.path.join(out_dir, "nvidia_smi.txt")),
               environment=_read(os.path.join(out_dir, "probe.json")))
    log = _read(os.path.join(out_dir, "quickstart.log"))
    doc["quickstart"] = dict(parse_quickstart(log), **phases.get("quickstart", {})) if log is not None else None
    if doc["quickstart"] is not None and quickstart_workdir:
        doc["quickstart"]["workdir"] = quickstart_workdir
    for part in ("train", "detector"):
        result = _read(os.path.join(out_dir, f"{part}.json"))
        doc[part] = (result or {}).get(part) if isinstance(result, dict) and "error" not in result else result
        if isinstance(result, dict) and "argv" in result and "benchmark_meta" not in doc:
            doc["benchmark_meta"] = {k: v for k, v in result.items() if k not in ("train", "detector")}
    return doc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("probe").add_argument("out")
    m = sub.add_parser("merge")
    m.add_argument("out_dir")
    m.add_argument("--quickstart-workdir")
    args = p.parse_args(argv)
    if args.command == "probe":
        doc, path = probe(), args.out
    else:
        doc, path = merge(args.out_dir, args.quickstart_workdir), os.path.join(args.out_dir, "accelerator.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, default=str)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
