"""Constraints on a trial's scores: `"<objective> >= <number | base | best_source | <model>>"`.

Violating trials stay in the results (they were measured) but never reach the front;
a user who needs "at least as safe as the safest source" says `safety>=best_source`.
The same constraints guide the sampler (search.samplers): each finished trial is told
how far it is from each bound (`Constraint.violation`), so TPE and NSGA-II steer towards
feasible merges instead of spending trials that the front throws away afterwards.

A constraint names a configured objective or a judge dimension. Scores are looked up by
the plain name first (rows carry every objective so, e.g. `row["safety"]`, and so do
reference dicts), then as the judge dimension's `wtr.<name>`.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from search.config import DIMENSIONS

# an objective may be a judge dimension, a metric or a user function 'pkg.mod:fn'
_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.:]*)\s*(>=|<=)\s*([A-Za-z0-9_.+-]+)\s*$")
#: The violation of a constraint whose score or bound is unknown (NaN): as far from
#: feasible as a win-tie rate can be. Optuna refuses NaN constraint values.
UNKNOWN_VIOLATION = 1.0


def score_of(scores: Mapping[str, object], name: str) -> float:
    """`name`'s score: under its plain name, else as judge dimension `wtr.<name>`; NaN if neither."""
    for key in (name, f"wtr.{name}"):
        value = scores.get(key)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    return math.nan


@dataclass(frozen=True)
class Constraint:
    dimension: str  # an objective or a judge dimension
    op: str
    bound: str  # a number, "base", "best_source", "worst_source" or a model key

    def threshold(self, references: Mapping[str, Mapping[str, float]]) -> float:
        try:
            return float(self.bound)
        except ValueError:
            pass
        if self.bound in ("best_source", "worst_source"):  # among the sources scored on this dimension
            sources = [score_of(v, self.dimension) for k, v in references.items() if k != "base"]
            scored = [s for s in sources if not math.isnan(s)]
            if not scored:
                return math.nan
            return max(scored) if self.bound == "best_source" else min(scored)
        return score_of(references[self.bound], self.dimension) if self.bound in references else math.nan

    def violation(self, row: Mapping[str, object], references: Mapping[str, Mapping[str, float]]) -> float:
        """How far `row` is from satisfying the constraint: ≤ 0 when it holds (Optuna's
        convention), UNKNOWN_VIOLATION when the score or the bound is unknown."""
        value, bound = score_of(row, self.dimension), self.threshold(references)
        if math.isnan(value) or math.isnan(bound):
            return UNKNOWN_VIOLATION
        return bound - value if self.op == ">=" else value - bound

    def holds(self, row: Mapping[str, object], references: Mapping[str, Mapping[str, float]]) -> bool:
        return self.violation(row, references) <= 0

    def __str__(self) -> str:
        return f"{self.dimension}{self.op}{self.bound}"


def parse_constraint(text: str, models: Sequence[str] = (), objectives: Sequence[str] = ()) -> Constraint:
    """`text` as a Constraint on one of `objectives` or a judge dimension, bounded by a
    number, `base`, `best_source`, `worst_source` or one of `models`."""
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"constraint {text!r}: expected '<objective> >= <bound>', e.g. 'safety>=best_source'")
    dim, op, bound = match.groups()
    names = list(dict.fromkeys([*objectives, *DIMENSIONS]))
    if dim not in names:
        raise ValueError(f"constraint {text!r}: unknown dimension {dim!r}; constraints name an objective or a "
                         f"judge dimension: {', '.join(names)}")
    named = {"base", "best_source", "worst_source", *models}
    if bound not in named:
        try:
            float(bound)
        except ValueError:
            raise ValueError(f"constraint {text!r}: bound must be a number or one of {sorted(named)}") from None
    return Constraint(dim, op, bound)


def feasible(row: Mapping[str, object], constraints: Sequence[Constraint],
             references: Mapping[str, Mapping[str, float]]) -> bool:
    return all(c.holds(row, references) for c in constraints)
