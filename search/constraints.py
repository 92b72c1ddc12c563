"""Constraints on a trial's scores: `"<dimension> >= <number | base | best_source | <model>>"`.

Violating trials stay in the results (they were measured) but never reach the front;
a user who needs "at least as safe as the safest source" says `safety>=best_source`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from search.config import DIMENSIONS

_PATTERN = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([A-Za-z0-9_.+-]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    dimension: str
    op: str
    bound: str  # a number, "base", "best_source", "worst_source" or a model key

    def threshold(self, references: Mapping[str, Mapping[str, float]]) -> float:
        key = f"wtr.{self.dimension}"
        try:
            return float(self.bound)
        except ValueError:
            pass
        sources = [v[key] for k, v in references.items() if k != "base"]
        if self.bound == "best_source":
            return max(sources) if sources else math.nan
        if self.bound == "worst_source":
            return min(sources) if sources else math.nan
        return references[self.bound][key] if self.bound in references else math.nan

    def holds(self, row: Mapping[str, float], references: Mapping[str, Mapping[str, float]]) -> bool:
        value, bound = row.get(f"wtr.{self.dimension}", math.nan), self.threshold(references)
        if math.isnan(value) or math.isnan(bound):
            return False
        return value >= bound if self.op == ">=" else value <= bound

    def __str__(self) -> str:
        return f"{self.dimension}{self.op}{self.bound}"


def parse_constraint(text: str, models: Sequence[str] = ()) -> Constraint:
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"constraint {text!r}: expected '<dimension> >= <bound>', e.g. 'safety>=best_source'")
    dim, op, bound = match.groups()
    if dim not in DIMENSIONS:
        raise ValueError(f"constraint {text!r}: unknown dimension {dim!r}; dimensions are {', '.join(DIMENSIONS)}")
    named = {"base", "best_source", "worst_source", *models}
    if bound not in named:
        try:
            float(bound)
        except ValueError:
            raise ValueError(f"constraint {text!r}: bound must be a number or one of {sorted(named)}") from None
    return Constraint(dim, op, bound)


def feasible(row: Mapping[str, float], constraints: Sequence[Constraint],
             references: Mapping[str, Mapping[str, float]]) -> bool:
    return all(c.holds(row, references) for c in constraints)
