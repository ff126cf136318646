"""Per-run result files and the sweep summary: ``results.json``, ``results.md``, ``results.png``."""

from __future__ import annotations

import json
import math
import os
import platform
import time

RESULT_FILE = "result.json"
METRICS = ("mAP", "AP", "APs", "APm", "APl")  # VOC07 mAP@0.5, then COCO AP and by area
METRIC_TITLES = {"mAP": "VOC07 mAP@0.5", "AP": "COCO AP", "APs": "APs", "APm": "APm", "APl": "APl"}


def machine_info() -> dict:
    """CPU model and core counts (from /proc/cpuinfo where it exists), platform, load average."""
    model, logical = None, 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    logical += 1
                    model = model or line.split(":", 1)[1].strip()
    except OSError:
        pass
    info = {"cpu_model": model or platform.processor() or "unknown",
            "cpu_cores": os.cpu_count(), "cpu_cores_listed": logical or None,
            "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "platform": platform.platform(), "python": platform.python_version()}
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import jax
        info["jax"] = jax.__version__
        info["devices"] = [str(d) for d in jax.devices()]
    except Exception as e:
        info["devices"] = f"unknown ({type(e).__name__})"
    return info


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        return _json_value(v.item())
    return v


def write_run_result(run_dir: str, row: str, seed: int, overrides: dict, result: dict, wall_s: float,
                     resumed: bool = False) -> dict:
    """The marker of a finished run: metrics, wall time and the overrides, written atomically.

    ``wall_s`` is the time of the call that finished the run (training + evaluation; for a
    ``resumed`` run only the part after the resume)."""
    losses = result.get("losses") or []
    record = {"row": row, "seed": seed, "overrides": {k: _to_jsonable(v) for k, v in overrides.items()},
              "metrics": {m: _json_value(result[m]) for m in METRICS if m in result},
              "wall_s": round(float(wall_s), 2), "resumed": bool(resumed),
              "final_loss": _json_value(float(losses[-1])) if len(losses) else None,
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = os.path.join(run_dir, RESULT_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, os.path.join(run_dir, RESULT_FILE))
    return record


def read_run_result(run_dir: str):
    path = os.path.join(run_dir, RESULT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _to_jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_to_jsonable(x) for x in v]
    return _json_value(v)


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)  # sample std over seeds
    return mean, math.sqrt(var)


def summarise(sweep, rows, runs: dict, seeds: int) -> list:
    """One summary per row: mean / std over seeds of each metric, delta vs the baseline, times."""
    out = []
    baseline = None
    for row in rows:
        records = [runs[(row.name, k)] for k in range(seeds) if runs.get((row.name, k))]
        entry = {"row": row.name, "overrides": {k: _to_jsonable(v) for k, v in row.overrides.items()},
                 "note": row.note, "seeds_done": len(records), "seeds": [r["seed"] for r in records]}
        for m in METRICS:
            mean, std = _mean_std([r["metrics"].get(m) for r in records])
            entry[m] = {"mean": mean, "std": std, "per_seed": [r["metrics"].get(m) for r in records]}
        entry["wall_s"] = _mean_std([r["wall_s"] for r in records])[0]
        if row.name == sweep.baseline.name:
            baseline = entry
        out.append(entry)
    for entry in out:
        for m in METRICS:
            b = baseline[m]["mean"] if baseline else None
            e = entry[m]["mean"]
            entry[m]["delta"] = None if b is None or e is None else e - b
    return out


def _fmt(mean, std, digits=3):
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _fmt_delta(d):
    return "-" if d is None else f"{d:+.3f}"


def _fmt_time(s):
    if s is None:
        return "-"
    return f"{int(s // 60)}m{s % 60:04.1f}s"


def write_summary(workdir: str, sweep, config_name: str, summary: list, header: dict) -> None:
    """results.json, results.md and results.png in the sweep's workdir."""
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({**header, "rows": summary}, f, indent=1, default=str)
    lines = [f"# Sweep `{sweep.name}` on `{config_name}`", "", sweep.description, ""]
    if header.get("smoke"):
        lines += ["**Smoke run** (a few steps on tiny images): the numbers mean nothing.", ""]
    m = header["machine"]
    lines += [(f"Machine: {m.get('cpu_model')}, {m.get('cpu_cores')} cores "
               f"({m.get('cpu_cores_usable')} usable), load average at start {m.get('load_average_at_start')}; "
               f"{header['seeds']} seed(s) per row; this invocation's wall time {_fmt_time(header['wall_s'])}, "
               f"{header['runs_trained']} run(s) trained, {header['runs_skipped']} already finished."), "",
              ("Mean ± sample std over seeds; Δ = difference of the means from the baseline row "
               f"(`{sweep.baseline.name}`). Time = mean wall time of one run (training + evaluation; on a "
               "shared machine it depends on the load)."), ""]
    cols = ["row", "seeds", "VOC07 mAP@0.5", "Δ mAP", "COCO AP", "Δ AP", "APs", "APm", "APl", "time/run", "overrides"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for e in summary:
        ov = ", ".join(f"`{k}={v}`" for k, v in e["overrides"].items()) or "(base config)"
        lines.append("| " + " | ".join([
            e["row"], str(e["seeds_done"]), _fmt(e["mAP"]["mean"], e["mAP"]["std"]), _fmt_delta(e["mAP"]["delta"]),
            _fmt(e["AP"]["mean"], e["AP"]["std"]), _fmt_delta(e["AP"]["delta"]),
            _fmt(e["APs"]["mean"], e["APs"]["std"]), _fmt(e["APm"]["mean"], e["APm"]["std"]),
            _fmt(e["APl"]["mean"], e["APl"]["std"]), _fmt_time(e["wall_s"]), ov]) + " |")
    if header.get("failures"):
        lines += ["", "Failed runs (no result; re-run the sweep to retry them):", ""]
        lines += [f"- `{f['row']}` seed {f['seed']}: {f['error']}" for f in header["failures"]]
    notes = [f"- `{e['row']}`: {e['note']}" for e in summary if e["note"]]
    if notes:
        lines += ["", "Rows:", ""] + notes
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(os.path.join(workdir, "results.png"), sweep, config_name, summary)


def plot(path: str, sweep, config_name: str, summary: list) -> None:
    """Bar chart of VOC07 mAP@0.5 per row with the seed std as error bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e["row"] for e in summary]
    means = [e["mAP"]["mean"] if e["mAP"]["mean"] is not None else 0.0 for e in summary]
    stds = [e["mAP"]["std"] or 0.0 for e in summary]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.6), dpi=100)
    colours = ["#555555"] + ["#3b75af"] * (len(names) - 1)
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color=colours[:len(names)])
    for i, (mu, sd, e) in enumerate(zip(means, stds, summary)):
        if e["mAP"]["mean"] is not None:
            ax.text(i, mu + sd + 0.01, f"{mu:.3f}", ha="center", va="bottom", fontsize=8)  # above the error bar
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("VOC07 mAP@0.5")
    ax.set_title(f"{sweep.name} on {config_name} (error bars: std over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
