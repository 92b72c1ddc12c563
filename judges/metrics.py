"""Win-tie rates, mean-diff against the sources, and bootstrap confidence intervals.

WTR(dimension) = share of the items the dimension applies to where the candidate is
better than or equal to the gold answer (Motyka et al.). Items whose verdict is not OK
(unparseable or failed) are excluded from the rate and counted in `n_excluded`, so a
flaky judge shows up as fewer scored items, never as made-up wins or losses. So is an OK
verdict without an outcome for the dimension: a judge that cannot check that dimension on
that item (the heuristic judge's factuality where the gold states no facts) says so by
leaving it out, rather than by a tie that every model would share.
Inconsistent both-orders outcomes count as not better-or-equal.

Confidence intervals are percentile bootstraps over items (seeded numpy generator).
The paired version resamples the *same* items for both systems, which is what makes a
difference between two merges judged on one eval set meaningful.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from judges.rubric import DEFAULT_RUBRIC, Rubric
from judges.verdicts import Outcome, Verdict


@dataclass(frozen=True)
class WTR:
    """Win-tie rate of one dimension; `value` is NaN when no item could be scored."""

    dimension: str
    value: float
    n_scored: int
    n_better: int
    n_tie: int
    n_excluded: int


@dataclass(frozen=True)
class ConfidenceInterval:
    estimate: float
    low: float
    high: float
    confidence: float
    n_items: int
    n_resamples: int


def _applicable(verdicts: Iterable[Verdict], dimension: str, rubric: Rubric) -> list[Verdict]:
    return [v for v in verdicts if rubric.applies(dimension, v.category)]


def _scored(verdicts: Iterable[Verdict], dimension: str) -> list[Verdict]:
    """The verdicts that score `dimension`: OK, and with an outcome for it."""
    return [v for v in verdicts if v.ok and dimension in v.outcomes]


def _indicators(verdicts: Iterable[Verdict], dimension: str, rubric: Rubric) -> dict[str, float]:
    """item_id -> 1.0 / 0.0 (candidate ≥ gold) for the scored items of one dimension."""
    out: dict[str, float] = {}
    for v in _scored(_applicable(verdicts, dimension, rubric), dimension):
        if v.item_id in out:
            raise ValueError(f"item {v.item_id!r} appears twice in the verdicts")
        out[v.item_id] = 1.0 if v.outcomes[dimension].win_or_tie else 0.0
    return out


def win_tie_indicators(verdicts: Sequence[Verdict], dimension: str,
                       rubric: Rubric = DEFAULT_RUBRIC) -> dict[str, float]:
    """item_id -> 1.0 if the candidate won or tied on `dimension`, else 0.0 (scored items only).

    What a study keeps per item, so confidence intervals can be computed long after the
    verdicts (WTR is the mean of these)."""
    return _indicators(verdicts, dimension, rubric)


def win_tie_rate(verdicts: Sequence[Verdict], dimension: str, rubric: Rubric = DEFAULT_RUBRIC) -> WTR:
    rubric.spec(dimension)  # unknown dimension -> clear KeyError
    applicable = _applicable(verdicts, dimension, rubric)
    scored = _scored(applicable, dimension)
    outcomes = [v.outcomes[dimension] for v in scored]
    better = sum(1 for o in outcomes if o is Outcome.BETTER)
    tie = sum(1 for o in outcomes if o is Outcome.TIE)
    value = (better + tie) / len(scored) if scored else math.nan
    return WTR(dimension, value, len(scored), better, tie, len(applicable) - len(scored))


def win_tie_rates(verdicts: Sequence[Verdict], rubric: Rubric = DEFAULT_RUBRIC) -> dict[str, WTR]:
    """WTR of every rubric dimension."""
    return {d: win_tie_rate(verdicts, d, rubric) for d in rubric.names}


def _value(x: float | WTR) -> float:
    return x.value if isinstance(x, WTR) else float(x)


def wtr_mean_diff(merge: Mapping[str, float | WTR], sources: Sequence[Mapping[str, float | WTR]]) -> dict[str, float]:
    """WTR(merge) − mean of the sources' WTRs, per dimension present in all of them.

    With two sources this is the study's WTR_mean-diff(m1, m2) = WTR(merge) − ½(WTR(m1)+WTR(m2)).
    """
    if not sources:
        raise ValueError("wtr_mean_diff needs at least one source")
    dims = [d for d in merge if all(d in s for s in sources)]
    return {d: _value(merge[d]) - float(np.mean([_value(s[d]) for s in sources])) for d in dims}


def _percentile_ci(estimate: float, samples: np.ndarray, confidence: float, n: int, n_resamples: int) -> ConfidenceInterval:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return ConfidenceInterval(float(estimate), float(low), float(high), confidence, n, n_resamples)


def _check(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be ≥ 1, got {n_resamples}")


def bootstrap_mean(values: np.ndarray, *, n_resamples: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> ConfidenceInterval:
    """Percentile bootstrap CI of a mean over items (per-item win/tie indicators, or
    per-item differences of them): the one resampling rule every CI here uses."""
    _check(confidence, n_resamples)
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return ConfidenceInterval(math.nan, math.nan, math.nan, confidence, 0, n_resamples)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    return _percentile_ci(x.mean(), x[idx].mean(axis=1), confidence, x.size, n_resamples)


def bootstrap_wtr(verdicts: Sequence[Verdict], dimension: str, *, n_resamples: int = 1000, seed: int = 0,
                  confidence: float = 0.95, rubric: Rubric = DEFAULT_RUBRIC) -> ConfidenceInterval:
    """Percentile bootstrap CI of one dimension's WTR over the scored items."""
    x = np.fromiter(_indicators(verdicts, dimension, rubric).values(), dtype=float)
    return bootstrap_mean(x, n_resamples=n_resamples, seed=seed, confidence=confidence)


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], *, n_resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> ConfidenceInterval:
    """CI of mean(a) − mean(b) over the items both scored (item id -> score), resampling items
    jointly: the paired comparison every difference of two systems on one eval set uses."""
    d = np.array([a[i] - b[i] for i in sorted(a.keys() & b.keys())])
    return bootstrap_mean(d, n_resamples=n_resamples, seed=seed, confidence=confidence)


def paired_bootstrap_diff(verdicts_a: Sequence[Verdict], verdicts_b: Sequence[Verdict], dimension: str, *,
                          n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                          rubric: Rubric = DEFAULT_RUBRIC) -> ConfidenceInterval:
    """CI of WTR(a) − WTR(b) on the items both systems have scored, resampling items jointly."""
    return paired_bootstrap(_indicators(verdicts_a, dimension, rubric), _indicators(verdicts_b, dimension, rubric),
                            n_resamples=n_resamples, seed=seed, confidence=confidence)
