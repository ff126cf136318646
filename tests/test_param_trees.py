"""compare_trees on hand-built trees: identical, missing, unexpected, wrong shape, flat state dicts."""

import numpy as np

from ssd_jax.param_trees import ShapeMismatch, compare_trees, flatten

EXPECTED = {"params": {"conv": {"kernel": np.zeros((3, 3, 1, 2)), "bias": np.zeros(2)},
                       "head": {"bias": np.zeros(4)}},
            "batch_stats": {}}


def test_identical_trees_match():
    diff = compare_trees(EXPECTED, {"params": {"head": {"bias": np.ones(4)},
                                               "conv": {"bias": np.ones(2), "kernel": np.ones((3, 3, 1, 2))}}})
    assert diff.matches
    assert diff.describe() == ""


def test_missing_unexpected_and_wrong_shape_are_all_reported():
    actual = {"params": {"conv": {"kernel": np.zeros((3, 3, 1, 5))}, "head": {"bias": np.zeros(4)},
                         "extra": {"scale": np.zeros(1)}}}
    diff = compare_trees(EXPECTED, actual)
    assert not diff.matches
    assert diff.missing == ("params/conv/bias",)
    assert diff.unexpected == ("params/extra/scale",)
    assert diff.wrong_shape == (ShapeMismatch("params/conv/kernel", (3, 3, 1, 5), (3, 3, 1, 2)),)
    assert diff.describe() == ("missing (1): params/conv/bias; unexpected (1): params/extra/scale; "
                               "wrong shape (1): params/conv/kernel: (3, 3, 1, 5) (expected (3, 3, 1, 2))")


def test_flat_state_dict_against_shape_tuples_and_limit():
    expected = {f"layer.{i}.weight": (i + 1, 2) for i in range(4)}
    diff = compare_trees(expected, {"layer.0.weight": np.zeros((1, 2))})
    assert diff.missing == ("layer.1.weight", "layer.2.weight", "layer.3.weight")
    assert diff.describe(limit=2) == "missing (3): layer.1.weight, layer.2.weight ..."


def test_flatten_joins_nested_keys_in_tree_order():
    assert list(flatten(EXPECTED)) == ["params/conv/kernel", "params/conv/bias", "params/head/bias"]
