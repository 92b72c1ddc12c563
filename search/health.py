"""Can an objective guide the search? Judged on the reference models before any trial.

An objective on which the base and every source score the same (proactivity 1.000 for all,
because no gold answer offered a follow-up) cannot tell a good merge from a bad one: the
sampler then optimises noise, and trials reach the front by one item. The same holds, more
softly, when the references differ but no pair differs beyond its bootstrap interval. So
after the references are judged, every objective gets a verdict that the log, REPORT.md and
`run_search.py check --references` print. Pure functions over per-item scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from judges import paired_bootstrap

PerItem = Mapping[str, Mapping[str, float]]  # objective -> item id -> score


@dataclass(frozen=True)
class PairDiff:
    """Paired difference of two references on one objective, over the items both scored."""

    first: str
    second: str
    estimate: float
    low: float
    high: float

    @property
    def separated(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class ObjectiveHealth:
    """One objective across the reference models: their scores, the pairs that differ beyond
    their 95 % interval, and whether the objective can guide the search."""

    objective: str
    scores: dict[str, float]
    separated: list[PairDiff]
    n_items: int = 0  # the most items any reference was scored on for this objective

    @property
    def spread(self) -> float:
        values = [v for v in self.scores.values() if not math.isnan(v)]
        return max(values) - min(values) if values else math.nan

    @property
    def constant(self) -> bool:
        return not self.spread > 1e-12

    @property
    def ok(self) -> bool:
        return not self.constant and bool(self.separated)

    def message(self) -> str:
        n = len(self.scores)
        if self.constant:
            value = next(iter(self.scores.values()), math.nan)
            return f"{self.objective}: all {n} reference models score {value:.3f} — this objective cannot guide the search"
        low, high = min(self.scores, key=self.scores.get), max(self.scores, key=self.scores.get)
        span = f"{self.scores[low]:.3f} ({low}) to {self.scores[high]:.3f} ({high})"
        if not self.separated:
            return (f"{self.objective}: the {n} reference models range from {span}, but no two differ beyond their "
                    f"95 % interval over {self.n_items} items — this objective may not guide the search (more items "
                    f"would tell)")
        best = max(self.separated, key=lambda p: abs(p.estimate))
        return (f"{self.objective}: ok, {span}; {len(self.separated)} pair(s) differ beyond their 95 % interval "
                f"over {self.n_items} items, e.g. {best.first} − {best.second} {best.estimate:+.3f} "
                f"[{best.low:+.3f}, {best.high:+.3f}]")


def objective_health(per_model: Mapping[str, PerItem], objectives: Sequence[str], *,
                     n_resamples: int = 1000) -> list[ObjectiveHealth]:
    """Health of each objective from the references' per-item scores (model -> objective -> item -> score)."""
    out = []
    for objective in objectives:
        items = {m: per_model[m].get(objective, {}) for m in per_model}
        scores = {m: (float(np.mean(list(v.values()))) if v else math.nan) for m, v in items.items()}
        pairs = []
        for a, b in combinations(per_model, 2):
            ci = paired_bootstrap(items[a], items[b], n_resamples=n_resamples)
            pairs.append(PairDiff(a, b, ci.estimate, ci.low, ci.high))
        n_items = max((len(v) for v in items.values()), default=0)
        out.append(ObjectiveHealth(objective, scores, [p for p in pairs if p.separated], n_items))
    return out
