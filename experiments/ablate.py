"""Runs an ablation sweep: every (row, seed) of a sweep through the ordinary trainer, then a table.

    python -m experiments.ablate --sweep design_choices --workdir runs/ablate_design --seeds 3
    python -m experiments.ablate --sweep paper_table2 --workdir runs/t2 --rows baseline,flip_only
    python -m experiments.ablate --sweep design_choices --workdir /tmp/smoke --smoke   # seconds per row
    python -m experiments.ablate --sweep paper_table2 --workdir runs/t2 --seeds 3 --summary-only
    python -m experiments.ablate --list

Sweeps are code in ``experiments/ablations/sweeps.py``. Run ``(row, seed k)`` trains into
``WORKDIR/<row>/seed<k>`` with ``config.seed = k`` (a normal workdir: ``ssd_jax.evaluate`` and
``ssd_jax.detect`` work on it) and, once ``train_and_evaluate`` returns, writes ``result.json``
there (metrics, wall time, overrides). Re-running skips runs that have ``result.json``; an
interrupted run resumes from its latest checkpoint. All selected rows are validated before anything
trains (an unknown config key is an error naming the row and the key). After every run the summary
is rewritten: ``WORKDIR/results.json``, ``results.md`` (mean ± std over seeds of VOC07 mAP@0.5,
COCO AP, APs/APm/APl, the difference from the baseline row, the time per run, the machine) and
``results.png`` (mAP per row with error bars).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time

import ml_collections

from experiments.ablations import results as results_lib
from experiments.ablations import sweeps as sweeps_lib


class SweepConfigError(ValueError):
    """A sweep's rows do not fit the config (unknown keys, bad values, missing features)."""


class RunFailures(RuntimeError):
    """Some runs raised (the others finished; the summary is written; re-running retries them)."""


def _dotted_keys(cfg, prefix=""):
    keys = []
    for k in cfg:
        v = cfg[k]
        full = prefix + k
        keys.append(full)
        if isinstance(v, ml_collections.ConfigDict):
            keys += _dotted_keys(v, full + ".")
    return keys


def _has_key(cfg, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def apply_overrides(cfg, overrides: dict, where: str):
    """Sets dotted keys on a (locked) ConfigDict; unknown keys and wrong types raise SweepConfigError."""
    for key, value in overrides.items():
        if not _has_key(cfg, key):
            close = difflib.get_close_matches(key, _dotted_keys(cfg), n=1)
            hint = f" (closest: {close[0]})" if close else ""
            raise SweepConfigError(f"{where}: unknown config key {key!r}{hint}")
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        try:
            setattr(node, leaf, value)
        except (TypeError, ValueError, AttributeError) as e:
            raise SweepConfigError(f"{where}: cannot set {key!r} to {value!r}: {e}") from e
    return cfg


def select_rows(sweep, rows_arg: str | None):
    if not rows_arg:
        return list(sweep.rows)
    names = [n.strip() for n in rows_arg.split(",") if n.strip()]
    unknown = [n for n in names if n not in {r.name for r in sweep.rows}]
    if unknown:
        raise SweepConfigError(f"sweep {sweep.name!r} has no row(s) {', '.join(map(repr, unknown))}; "
                               f"rows: {', '.join(r.name for r in sweep.rows)}")
    return [sweep.row(n) for n in names]


def build_configs(sweep, rows, smoke: bool = False, load=None) -> dict:
    """Config of every selected row (seed not set yet); all problems of all rows in one error."""
    from ssd_jax import configs

    load = load or configs.load
    problems, out = [], {}
    for row in rows:
        where = f"sweep {sweep.name!r} row {row.name!r}"
        cfg = load(sweep.base)
        try:
            if smoke:
                apply_overrides(cfg, sweeps_lib.SMOKE_OVERRIDES, f"{where} (--smoke)")
            out[row.name] = apply_overrides(cfg, row.overrides, where)
        except SweepConfigError as e:
            problems.append(str(e))
    if problems:
        raise SweepConfigError("the sweep cannot run:\n  " + "\n  ".join(problems))
    return out


def run_sweep(sweep, workdir: str, seeds: int = 1, smoke: bool = False, rows_arg: str | None = None,
              train_fn=None, log=print, summary_only: bool = False) -> list:
    """Trains every missing (row, seed) run and writes the summary; returns the summary rows.

    ``summary_only``: train nothing; the summary covers the runs that have finished (each row's
    ``seeds_done`` says how many), e.g. while other runners are still training the rest.
    """
    rows = select_rows(sweep, rows_arg)
    row_configs = build_configs(sweep, rows, smoke)  # validates everything before training anything
    if seeds < 1:
        raise SweepConfigError("--seeds must be at least 1")
    os.makedirs(workdir, exist_ok=True)
    header = {"sweep": sweep.name, "base_config": sweep.base, "seeds": seeds, "smoke": smoke,
              "rows_selected": [r.name for r in rows], "machine": results_lib.machine_info(),
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}
    t_start = time.time()
    runs, trained, skipped, failures = {}, 0, 0, []

    def summary_now():
        header.update(wall_s=round(time.time() - t_start, 2), runs_trained=trained, runs_skipped=skipped,
                      failures=failures)
        summary = results_lib.summarise(sweep, rows, runs, seeds)
        results_lib.write_summary(workdir, sweep, sweep.base, summary, header)
        return summary

    for row in rows:
        for k in range(seeds):
            run_dir = os.path.join(workdir, row.name, f"seed{k}")
            done = results_lib.read_run_result(run_dir)
            if done is not None:
                stored = done.get("overrides")
                if stored != json.loads(json.dumps({a: results_lib._to_jsonable(b) for a, b in row.overrides.items()})):
                    log(f"warning: {run_dir} finished with overrides {stored}, the row now says {row.overrides}; "
                        f"delete the run to retrain it")
                log(f"[ablate] {row.name} seed {k}: finished earlier (mAP {done['metrics'].get('mAP')}), skipped")
                runs[(row.name, k)] = done
                skipped += 1
                continue
            if summary_only:
                log(f"[ablate] {row.name} seed {k}: not finished, left out of the summary")
                continue
            if train_fn is None:
                from ssd_jax import train as trainer

                train = trainer.train_and_evaluate
            else:
                train = train_fn
            config = row_configs[row.name].copy_and_resolve_references()  # a fresh copy per seed
            config.seed = k
            config.lock()
            resumed = os.path.isdir(os.path.join(run_dir, "checkpoints"))
            os.makedirs(run_dir, exist_ok=True)
            log(f"[ablate] {row.name} seed {k}: training into {run_dir}")
            t0 = time.time()
            try:
                result = train(config, run_dir)
            except Exception as e:
                failures.append({"row": row.name, "seed": k, "error": f"{type(e).__name__}: {e}"})
                log(f"[ablate] {row.name} seed {k}: FAILED ({type(e).__name__}: {e}); re-run to retry")
                summary_now()
                continue
            wall = time.time() - t0
            if result.get("stopped_by") or "mAP" not in result:
                log(f"[ablate] {row.name} seed {k}: stopped ({result.get('stopped_by')}); re-run to resume")
                summary_now()
                raise KeyboardInterrupt(result.get("stopped_by") or "stopped")
            runs[(row.name, k)] = results_lib.write_run_result(run_dir, row.name, k, row.overrides, result, wall,
                                                                   resumed=resumed)
            trained += 1
            log(f"[ablate] {row.name} seed {k}: mAP {result['mAP']:.4f} in {wall:.1f}s")
            summary_now()
    summary = summary_now()
    with open(os.path.join(workdir, "results.md")) as f:
        log(f.read())
    if failures:
        raise RunFailures(f"{len(failures)} run(s) failed: "
                          + "; ".join(f"{f['row']} seed {f['seed']}: {f['error']}" for f in failures))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.ablate", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", help="sweep name (experiments/ablations/sweeps.py)")
    parser.add_argument("--workdir", help="the sweep's folder; run (row, seed k) trains into WORKDIR/<row>/seed<k>")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per row (default 1)")
    parser.add_argument("--smoke", action="store_true", help="a few steps on tiny images (tests the whole path)")
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the sweeps and their rows")
    parser.add_argument("--summary-only", action="store_true",
                        help="train nothing: rewrite the summary over the runs that have finished")
    args = parser.parse_args(argv)
    if args.list:
        for s in sweeps_lib.SWEEPS.values():
            print(f"{s.name} (base {s.base}): {s.description}")
            for r in s.rows:
                print(f"  {r.name}: {r.overrides or '(base config)'}")
        return 0
    if not args.sweep or not args.workdir:
        parser.error("--sweep and --workdir are required")
    try:
        sweep = sweeps_lib.get(args.sweep)
        run_sweep(sweep, args.workdir, seeds=args.seeds, smoke=args.smoke, rows_arg=args.rows,
                  summary_only=args.summary_only)
    except (SweepConfigError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    except RunFailures as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
