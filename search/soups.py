"""Model soups (Wortsman et al., 2022) as strategies over the search's own evaluation.

uniform soup:  θ = (1/N) Σ_i θ_i over every source — one linear merge.
greedy soup:   sort the sources by their own score, best first; the soup starts as the
               best source; each next source is added when the uniform average of the soup
               plus that source scores at least as well as the soup without it
               (`score(soup ∪ {i}) ≥ score(soup)`), otherwise it is left out.

The paper scores on held-out validation accuracy; here a soup's score is the mean WTR over
the search's objectives on the same eval set and judge as every trial, so soups, search
trials and reference models sit in one table and on one plot. A candidate whose evaluation
failed scores NaN and is never added.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STRATEGIES = ("uniform_soup", "greedy_soup")


def soup_plan(ingredients: Sequence[str], base: str) -> dict[str, Any]:
    """The uniform average of `ingredients` as a merge plan (mergekit schema)."""
    return {"merge_method": "linear", "base_model": base,
            "models": [{"model": m, "parameters": {"weight": 1.0}} for m in ingredients],
            "parameters": {"normalize": True}, "dtype": "bfloat16"}


def soup_score(metrics: Mapping[str, Any], objectives: Sequence[str]) -> float:
    """Mean of the objectives' WTR; NaN when any is missing (a failed evaluation)."""
    values = [metrics.get(o, metrics.get(f"wtr.{o}")) for o in objectives]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return math.nan
    return sum(float(v) for v in values) / len(values)


@dataclass
class GreedySoup:
    """The ingredients kept, and every candidate soup tried with its score, in order."""

    ingredients: list[str]
    tried: list[tuple[list[str], float, bool]] = field(default_factory=list)  # (soup, score, kept)


def greedy_soup(source_scores: Mapping[str, float], evaluate: Callable[[list[str]], float]) -> GreedySoup:
    """Wortsman et al.'s Recipe 1. `evaluate(ingredients)` scores the uniform soup of those
    sources (≥ 2 of them; single sources are scored already, in `source_scores`)."""
    ranked = sorted((s for s in source_scores if math.isfinite(source_scores[s])),
                    key=lambda s: source_scores[s], reverse=True)
    if not ranked:
        raise ValueError("greedy soup: no source has a finite score to start from")
    soup, best = [ranked[0]], source_scores[ranked[0]]
    result = GreedySoup(ingredients=soup)
    for candidate in ranked[1:]:
        trial = [*soup, candidate]
        score = evaluate(trial)
        kept = math.isfinite(score) and score >= best
        result.tried.append((trial, score, kept))
        if kept:
            soup, best = trial, score
    result.ingredients = soup
    return result
