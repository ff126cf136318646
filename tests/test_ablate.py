"""The ablation runner (experiments/ablate.py), its sweeps, and the shapes / shapes_hard data."""

import hashlib
import json
import os

import numpy as np
import pytest

from experiments import ablate
from experiments.ablations import results, sweeps
from ssd_jax import configs
from ssd_jax.data import shapes

# ---------------------------------------------------------------- shapes: defaults unchanged

# sha256 (first 16 hex digits) of image, boxes and labels bytes of examples 0..3 of the `shapes`
# config, produced by /work/main's code at commit 4eed907 (before the harder-task settings) with
#   c = ssd_jax.configs.load("shapes").data.shapes
#   shapes.generate_example(i, split, seed=c.seed, image_size=c.image_size,
#                           min_objects=c.min_objects, max_objects=c.max_objects, clutter=c.clutter)
#   h = hashlib.sha256(); [h.update(np.ascontiguousarray(a).tobytes()) for a in (image, boxes, labels)]
SHAPES_HASHES_BEFORE = {
    "train": ["6e25c1b8870148cf", "2241f0adf1964c42", "4ddb3e43d11d8a42", "1a72247d297a96a9"],
    "val": ["11f0fed382ed736e", "691b69a298827242", "87ce84c637b0e86d", "1228c75bb7edef7a"],
}


def _hash(example):
    h = hashlib.sha256()
    for a in example:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def test_shapes_defaults_are_bit_identical_to_before():
    c = configs.load("shapes").data.shapes
    for split, expected in SHAPES_HASHES_BEFORE.items():
        # the old call (only the old arguments) and the new one (every data.shapes setting)
        old = [_hash(shapes.generate_example(i, split, seed=c.seed, image_size=c.image_size,
                                             min_objects=c.min_objects, max_objects=c.max_objects,
                                             clutter=c.clutter)) for i in range(4)]
        new = [_hash(shapes.generate_example(i, split, **shapes.generator_kwargs(c))) for i in range(4)]
        assert old == expected and new == expected, split


def test_default_data_config_has_the_generator_defaults():
    from ssd_jax import data

    kw = shapes.generator_kwargs(data.default_config().shapes)
    assert {k: kw[k] for k in shapes.DEFAULT_SETTINGS} == shapes.DEFAULT_SETTINGS


# ---------------------------------------------------------------- shapes_hard

def _hard_examples(n, split="train"):
    kw = shapes.generator_kwargs(configs.load("shapes_hard").data.shapes)
    return [shapes.generate_example(i, split, **kw) for i in range(n)], kw


def test_shapes_hard_properties():
    examples, kw = _hard_examples(150)
    boxes = np.concatenate([b for _, b, _ in examples])
    labels = np.concatenate([lab for _, _, lab in examples])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.sqrt(w * h)
    assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(w > 0) and np.all(h > 0)
    assert side.min() < 0.09 and side.max() > 0.7          # sides from about 0.07 to 0.9
    assert np.mean(side < 0.12) > 0.15                       # many small objects (log-uniform)
    aspect = w / h
    assert np.sum(aspect > 2.5) >= 10 and np.sum(aspect < 0.4) >= 10  # elongated both ways
    counts = [len(lab) for _, _, lab in examples]
    assert min(counts) >= kw["min_objects"] and max(counts) <= kw["max_objects"] and np.mean(counts) > 4
    assert set(labels.tolist()) == {1, 2, 3, 4}
    # partial occlusion: some pairs of boxes overlap more than the easy task allows (IoU 0.3)
    ious = [shapes._iou(b[i], list(b[:i])).max() for _, b, _ in examples for i in range(1, len(b))]
    assert max(ious) > 0.3


def test_shapes_hard_is_deterministic():
    a, _ = _hard_examples(3, "val")
    b, _ = _hard_examples(3, "val")
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert _hash(a[0]) != _hash(_hard_examples(1, "train")[0][0])


def test_shapes_source_gets_every_setting():
    """The pipeline's shapes source generates exactly what the generator does with every data.shapes.* setting."""
    import ml_collections

    from ssd_jax.data import sources

    cfg = ml_collections.ConfigDict(dict(
        num_train=1, num_eval=1, image_size=48, seed=0,
        **{**shapes.DEFAULT_SETTINGS, "min_side": 0.1, "max_side": 0.9, "distractors": 3, "clutter": 2.0}))
    got = sources.ShapesSource(cfg).generate("train", 0)
    want = shapes.generate_example(0, "train", **shapes.generator_kwargs(cfg))
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


# ---------------------------------------------------------------- the runner without training

def _fake_metrics(config):
    base = 0.5 + 0.1 * float(config.loss.alpha) + 0.01 * config.seed
    return {"mAP": base, "AP": base / 2, "APs": 0.1, "APm": 0.2, "APl": 0.3, "losses": [1.0], "stopped_by": None}


def _fake_train(calls):
    def train(config, workdir):
        calls.append((workdir, config.seed))
        return _fake_metrics(config)
    return train


def test_runner_writes_tables_and_skips_finished_runs(tmp_path):
    sweep = sweeps.DESIGN_CHOICES
    calls = []
    summary = ablate.run_sweep(sweep, str(tmp_path), seeds=2, rows_arg="baseline,alpha_2",
                               train_fn=_fake_train(calls), log=lambda *a: None)
    assert len(calls) == 4 and {s for _, s in calls} == {0, 1}
    assert os.path.isdir(tmp_path / "alpha_2" / "seed1")
    assert [e["row"] for e in summary] == ["baseline", "alpha_2"]
    assert summary[1]["mAP"]["delta"] == pytest.approx(0.1)
    assert summary[0]["mAP"]["std"] == pytest.approx(np.std([0.6, 0.61], ddof=1))
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [r["row"] for r in doc["rows"]] == ["baseline", "alpha_2"]
    assert doc["machine"]["cpu_cores"] and "cpu_model" in doc["machine"] and "wall_s" in doc
    md = (tmp_path / "results.md").read_text()
    assert "| baseline |" in md and "| alpha_2 |" in md and "+0.100" in md and "Machine:" in md
    assert (tmp_path / "results.png").stat().st_size > 0
    mtimes = {p: os.stat(p).st_mtime_ns for p in tmp_path.glob("*/seed*/result.json")}
    assert len(mtimes) == 4

    def must_not_train(config, workdir):
        raise AssertionError("a finished run was trained again")

    ablate.run_sweep(sweep, str(tmp_path), seeds=2, rows_arg="baseline,alpha_2", train_fn=must_not_train,
                     log=lambda *a: None)
    assert {p: os.stat(p).st_mtime_ns for p in tmp_path.glob("*/seed*/result.json")} == mtimes
    # one more seed trains only the new runs
    calls.clear()
    ablate.run_sweep(sweep, str(tmp_path), seeds=3, rows_arg="baseline,alpha_2", train_fn=_fake_train(calls),
                     log=lambda *a: None)
    assert sorted(calls) == sorted([(str(tmp_path / r / "seed2"), 2) for r in ("baseline", "alpha_2")])


def test_summary_only_trains_nothing_and_counts_the_finished_seeds(tmp_path):
    sweep = sweeps.DESIGN_CHOICES
    ablate.run_sweep(sweep, str(tmp_path), seeds=2, rows_arg="baseline,alpha_2", train_fn=_fake_train([]),
                     log=lambda *a: None)
    ablate.run_sweep(sweep, str(tmp_path), seeds=1, rows_arg="alpha_0.5", train_fn=_fake_train([]),
                     log=lambda *a: None)

    def must_not_train(config, workdir):
        raise AssertionError("--summary-only trained a run")

    summary = ablate.run_sweep(sweep, str(tmp_path), seeds=3, rows_arg="baseline,alpha_2,alpha_0.5",
                               train_fn=must_not_train, log=lambda *a: None, summary_only=True)
    assert [(e["row"], e["seeds_done"]) for e in summary] == [("baseline", 2), ("alpha_2", 2), ("alpha_0.5", 1)]
    # alpha 0.5 seed 0: 0.55; baseline (alpha 1) seeds 0, 1: 0.60, 0.61
    assert summary[2]["mAP"]["delta"] == pytest.approx(0.55 - 0.605)
    assert not (tmp_path / "alpha_0.5" / "seed1").exists()


def test_interrupted_run_writes_no_result(tmp_path):
    def stopped(config, workdir):
        return {"losses": [], "stopped_by": "SIGTERM", "step": 3}

    with pytest.raises(KeyboardInterrupt):
        ablate.run_sweep(sweeps.DESIGN_CHOICES, str(tmp_path), rows_arg="baseline", train_fn=stopped,
                         log=lambda *a: None)
    assert not (tmp_path / "baseline" / "seed0" / "result.json").exists()


def test_a_failing_run_is_reported_and_the_others_still_run(tmp_path):
    calls = []

    def train(config, workdir):
        if config.loss.alpha == 2.0:
            raise FloatingPointError("loss is NaN")
        return _fake_train(calls)(config, workdir)

    with pytest.raises(ablate.RunFailures, match=r"alpha_2 seed 0.*NaN"):
        ablate.run_sweep(sweeps.DESIGN_CHOICES, str(tmp_path), rows_arg="baseline,alpha_2,alpha_0.5",
                         train_fn=train, log=lambda *a: None)
    assert len(calls) == 2 and not (tmp_path / "alpha_2" / "seed0" / "result.json").exists()
    assert "Failed runs" in (tmp_path / "results.md").read_text()


def test_unknown_key_is_an_error_naming_row_and_key(tmp_path, monkeypatch, capsys):
    bad = sweeps.Sweep("bad", "shapes_hard", (sweeps.Row("baseline"), sweeps.Row("ok", {"loss.alpha": 2.0}),
                                               sweeps.Row("typo", {"loss.alpah": 2.0})))
    monkeypatch.setitem(sweeps.SWEEPS, "bad", bad)
    calls = []
    with pytest.raises(ablate.SweepConfigError, match=r"row 'typo'.*'loss.alpah'.*closest: loss.alpha"):
        ablate.run_sweep(bad, str(tmp_path), train_fn=_fake_train(calls))
    assert calls == [] and not (tmp_path / "baseline").exists()
    assert ablate.main(["--sweep", "bad", "--workdir", str(tmp_path)]) == 2
    assert "loss.alpah" in capsys.readouterr().err


def test_bad_value_and_unknown_row_are_errors(tmp_path):
    bad = sweeps.Sweep("bad", "shapes_hard", (sweeps.Row("baseline"), sweeps.Row("x", {"loss.alpha": "two"})))
    with pytest.raises(ablate.SweepConfigError, match=r"row 'x'.*loss.alpha"):
        ablate.run_sweep(bad, str(tmp_path), train_fn=_fake_train([]))
    with pytest.raises(ablate.SweepConfigError, match="no row"):
        ablate.run_sweep(sweeps.DESIGN_CHOICES, str(tmp_path), rows_arg="baseline,nope", train_fn=_fake_train([]))


def test_every_sweep_row_builds_its_config_and_default_boxes():
    from ssd_jax import models

    for s in sweeps.SWEEPS.values():
        built = ablate.build_configs(s, list(s.rows), smoke=True)
        assert list(built) == [r.name for r in s.rows]
        for name, cfg in built.items():
            assert models.config_spec(cfg).num_boxes > 0, (s.name, name)
    one_map = ablate.build_configs(sweeps.PAPER_TABLE3, [sweeps.PAPER_TABLE3.row("one_map")])["one_map"]
    assert len(models.config_spec(one_map).feature_map_sizes) == 1


# ---------------------------------------------------------------- the real path (--smoke)

@pytest.mark.slow
def test_smoke_sweep_trains_and_reruns_skip(tmp_path, monkeypatch):
    workdir = str(tmp_path / "sweep")
    argv = ["--sweep", "design_choices", "--workdir", workdir, "--smoke", "--rows", "baseline,alpha_2"]
    assert ablate.main(argv) == 0
    with open(os.path.join(workdir, "results.json")) as f:
        doc = json.load(f)
    assert [r["row"] for r in doc["rows"]] == ["baseline", "alpha_2"] and doc["smoke"]
    for r in doc["rows"]:
        assert r["seeds_done"] == 1 and r["mAP"]["mean"] is not None and r["AP"]["mean"] is not None
    with open(os.path.join(workdir, "results.md")) as f:
        md = f.read()
    assert "| baseline |" in md and "| alpha_2 |" in md and "Smoke run" in md
    assert os.path.getsize(os.path.join(workdir, "results.png")) > 0
    result_files = [os.path.join(workdir, r, "seed0", results.RESULT_FILE) for r in ("baseline", "alpha_2")]
    mtimes = [os.stat(p).st_mtime_ns for p in result_files]

    from ssd_jax import train as trainer

    def must_not_train(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(trainer, "train_and_evaluate", must_not_train)
    assert ablate.main(argv) == 0
    assert [os.stat(p).st_mtime_ns for p in result_files] == mtimes


def test_coverage_by_row_elongation_hand_worked():
    from experiments.ablations.coverage_by_row import elongation

    boxes = np.array([[0.0, 0.0, 0.5, 0.25], [0.1, 0.1, 0.3, 0.5]])
    image_hw = np.array([[100, 200], [100, 100]])  # (height, width)
    # box 0: 100 px wide, 25 px high -> 4; box 1: 20 px wide, 40 px high -> 2
    np.testing.assert_allclose(elongation(boxes, image_hw), [4.0, 2.0])


def test_headline_welch_t_by_hand():
    from experiments.ablations import headline

    row = {"mean": 0.55, "std": np.std([0.5, 0.6], ddof=1), "per_seed": [0.5, 0.6]}
    base = {"mean": 0.40, "std": 0.0, "per_seed": [0.4, 0.4, 0.4]}
    assert headline.welch_t(row, base) == pytest.approx(0.15 / np.sqrt(0.005 / 2))  # = 3.0
    assert headline.welch_t({**row, "per_seed": [0.55]}, base) is None  # one seed: no spread
