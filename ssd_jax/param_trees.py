"""Comparing two parameter trees by name and shape: what is missing, unexpected or wrongly shaped.

A tree is a mapping whose values are leaves or further mappings (a Flax params / variables
tree, a PyTorch-style state dict). Nested mappings are flattened to ``"a/b/c"`` paths; the keys
of a flat mapping are used as they are (``"backbone.features.0.weight"``). A leaf is anything
with a ``.shape`` (NumPy / JAX arrays, ``jax.ShapeDtypeStruct``) or a shape as a tuple of ints.
Empty sub-mappings have no leaves and disappear (``{"batch_stats": {}}`` equals ``{}``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple


class ShapeMismatch(NamedTuple):
    path: str
    actual: tuple
    expected: tuple


@dataclasses.dataclass(frozen=True)
class TreeDiff:
    """How ``actual`` differs from ``expected``, each list in tree order.

    Attributes:
      missing: paths of ``expected`` absent from ``actual``.
      unexpected: paths of ``actual`` absent from ``expected``.
      wrong_shape: paths present in both with different shapes (in ``expected``'s order).
    """

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    wrong_shape: tuple[ShapeMismatch, ...]

    @property
    def matches(self) -> bool:
        """True when the trees have the same paths and shapes."""
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int | None = None) -> str:
        """One line, e.g. ``missing (2): a/b, a/c; wrong shape (1): d: (3,) (expected (4,))``.

        ``limit``: at most this many paths per kind, then ``...`` (default: all).
        """
        wrong = [f"{m.path}: {m.actual} (expected {m.expected})" for m in self.wrong_shape]
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected), ("wrong shape", wrong)):
            if items:
                shown = items if limit is None else items[:limit]
                more = " ..." if len(shown) < len(items) else ""
                parts.append(f"{label} ({len(items)}): {', '.join(shown)}{more}")
        return "; ".join(parts)


def flatten(tree: Mapping) -> dict:
    """``{path: leaf}`` of a (nested) mapping, nested keys joined with ``/``, in tree order."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}/{path}": leaf for path, leaf in flatten(value).items()})
        else:
            flat[str(key)] = value
    return flat


def _shape(leaf) -> tuple:
    return tuple(leaf.shape) if hasattr(leaf, "shape") else tuple(leaf)


def compare_trees(expected: Mapping, actual: Mapping) -> TreeDiff:
    """The :class:`TreeDiff` of ``actual`` against ``expected`` (see the module docstring for trees)."""
    want, got = flatten(expected), flatten(actual)
    return TreeDiff(
        missing=tuple(p for p in want if p not in got),
        unexpected=tuple(p for p in got if p not in want),
        wrong_shape=tuple(ShapeMismatch(p, _shape(got[p]), _shape(leaf)) for p, leaf in want.items()
                          if p in got and _shape(got[p]) != _shape(leaf)))
