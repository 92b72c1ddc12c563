"""From a model's answers to the numbers a trial reports: WTR per dimension and counts.

Every dimension is reported (`wtr.<dim>`), the configured objectives also under their
plain names (what Optuna maximises). A dimension no item could be scored on is NaN,
which Optuna records as a failed trial instead of a made-up zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from judges import EvalItem, JudgeItem, Verdict, VerdictStatus, win_tie_indicators, win_tie_rates
from search.config import DIMENSIONS


def conversations(items: Sequence[EvalItem]) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": item.prompt}] for item in items]


def judge_items(items: Sequence[EvalItem], answers: Sequence[str]) -> list[JudgeItem]:
    if len(items) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(items)} eval items")
    return [JudgeItem(item.id, item.prompt, item.gold, answer, item.category) for item, answer in zip(items, answers)]


def score(verdicts: Sequence[Verdict], objectives: Sequence[str]) -> dict[str, float]:
    rates = win_tie_rates(verdicts)
    metrics: dict[str, float] = {}
    for dim in DIMENSIONS:
        rate = rates.get(dim)
        metrics[f"wtr.{dim}"] = rate.value if rate is not None and rate.n_scored else math.nan
    for dim in objectives:
        metrics[dim] = metrics[f"wtr.{dim}"]
    metrics["judged_ok"] = sum(v.status is VerdictStatus.OK for v in verdicts)
    metrics["judge_unparseable"] = sum(v.status is VerdictStatus.UNPARSEABLE for v in verdicts)
    metrics["judge_failed"] = sum(v.status is VerdictStatus.FAILED for v in verdicts)
    return metrics


def item_indicators(verdicts: Sequence[Verdict]) -> dict[str, dict[str, float]]:
    """dimension -> item -> 1.0/0.0 win-or-tie: kept per trial for bootstrap intervals."""
    return {dim: win_tie_indicators(verdicts, dim) for dim in DIMENSIONS}


def mean_diff(metrics: Mapping[str, float], references: Mapping[str, Mapping[str, float]],
              sources: Sequence[str]) -> dict[str, float]:
    """WTR mean-diff: the merge's WTR minus the mean of its sources' WTRs, per dimension."""
    out = {}
    for dim in DIMENSIONS:
        values = [references[s][f"wtr.{dim}"] for s in sources if s in references]
        mine = metrics.get(f"wtr.{dim}", math.nan)
        out[f"meandiff.{dim}"] = mine - sum(values) / len(values) if values else math.nan
    return out
