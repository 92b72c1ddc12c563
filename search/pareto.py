"""Pareto fronts, hypervolume and picks over objective vectors (all maximised). Pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = Sequence[float]


def is_finite_number(value: object) -> bool:
    """Whether `value` is a usable objective value (a real, finite number; not None, text or NaN)."""
    return isinstance(value, int | float) and math.isfinite(value)


def dominates(a: Point, b: Point) -> bool:
    """a is at least as good everywhere and strictly better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def non_dominated(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates; NaN points are never on the front."""
    valid = [i for i, p in enumerate(points) if not any(math.isnan(x) for x in p)]
    return [i for i in valid if not any(dominates(points[j], points[i]) for j in valid if j != i)]


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Volume dominated by `points` and bounded below by `reference` (exact, by slicing).

    Exponential in the number of objectives in the worst case, fine for the few dozen
    points and ≤ 7 objectives of a merge search."""
    pts = [tuple(p) for p in points if all(x > r for x, r in zip(p, reference))]
    return _hv(pts, tuple(reference))


def _hv(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(ref) == 1:
        return max(p[0] for p in points) - ref[0]
    # Slice along the last objective: between consecutive levels the dominated region is
    # the (d-1)-dimensional hypervolume of the points at or above that level.
    levels = sorted({p[-1] for p in points}, reverse=True)
    volume = 0.0
    for i, level in enumerate(levels):
        below = levels[i + 1] if i + 1 < len(levels) else ref[-1]
        slab = [p[:-1] for p in points if p[-1] >= level]
        volume += _hv(slab, ref[:-1]) * (level - below)
    return volume


def knee(points: Sequence[Point]) -> int:
    """The front point closest (Euclidean, after min-max scaling) to the ideal point."""
    if not points:
        raise ValueError("no points to pick from")
    dims = len(points[0])
    lo = [min(p[d] for p in points) for d in range(dims)]
    hi = [max(p[d] for p in points) for d in range(dims)]
    def distance(p: Point) -> float:
        return math.sqrt(sum(((hi[d] - p[d]) / (hi[d] - lo[d]) if hi[d] > lo[d] else 0.0) ** 2 for d in range(dims)))
    return min(range(len(points)), key=lambda i: distance(points[i]))


def weighted_pick(points: Sequence[Point], weights: Sequence[float]) -> int:
    if not points:
        raise ValueError("no points to pick from")
    return max(range(len(points)), key=lambda i: sum(w * x for w, x in zip(weights, points[i])))
