"""One table over the committed sweeps: VOC07 mAP@0.5 per row, mean ± std over seeds, the difference
from the sweep's baseline and Welch's t of that difference.

    python -m experiments.ablations.headline [--results experiments/ablations/results]

Reads ``<results>/<sweep>/results.json`` as ``experiments.ablate`` writes it and prints Markdown.
``t = Δ / sqrt(s_row² / n_row + s_base² / n_base)`` (sample stds); with 3 seeds per row, |t| > 2.8
is a difference at about the 5% level (Welch, ~4 degrees of freedom); the baseline row has no t.
"""

from __future__ import annotations

import argparse
import json
import math
import os

SWEEPS = ("paper_table2", "paper_table3", "design_choices")


def welch_t(row: dict, base: dict) -> float | None:
    """Welch's t of ``row``'s mean minus ``base``'s (each ``{"mean", "std", "per_seed"}``); None if undefined."""
    n_row, n_base = len(row["per_seed"]), len(base["per_seed"])
    if n_row < 2 or n_base < 2:
        return None
    se = math.sqrt(row["std"] ** 2 / n_row + base["std"] ** 2 / n_base)
    return (row["mean"] - base["mean"]) / se if se > 0 else None


def table(results_dir: str, sweeps=SWEEPS) -> str:
    lines = ["| sweep | row | seeds | VOC07 mAP@0.5 | per seed | Δ | t |", "|---|---|---|---|---|---|---|"]
    for sweep in sweeps:
        path = os.path.join(results_dir, sweep, "results.json")
        with open(path) as f:
            rows = json.load(f)["rows"]
        base = rows[0]  # the first row of a sweep is its baseline (experiments/ablations/sweeps.py)
        for r in rows:
            m = r["mAP"]
            if m["mean"] is None:
                continue
            t = None if r is base else welch_t(m, base["mAP"])
            std = f" ± {m['std']:.3f}" if m["std"] is not None else ""
            seeds = ", ".join(f"{v:.3f}" for v in m["per_seed"])
            delta = "" if r is base else f"{m['delta']:+.3f}"
            t_text = "" if t is None else f"{t:+.1f}"
            lines.append(f"| {sweep} | `{r['row']}` | {r['seeds_done']} | {m['mean']:.3f}{std} | {seeds} | "
                         f"{delta} | {t_text} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results"))
    print(table(parser.parse_args().results))


if __name__ == "__main__":
    main()
