"""From a model's answers to the numbers a trial reports: WTR per dimension, answer metrics, counts.

Every dimension is reported (`wtr.<dim>`), the configured objectives also under their
plain names (what Optuna maximises). An objective that is not a judge dimension is an
answer metric (a built-in of `judges.answer_metrics` or a user function `pkg.mod:fn`),
computed from the answers and the eval items. A dimension or metric no item could be
scored on is NaN, which Optuna records as a failed trial instead of a made-up zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from judges import EvalItem, JudgeItem, Verdict, VerdictStatus, bootstrap_mean, win_tie_indicators, win_tie_rates
from judges.answer_metrics import MetricError, metric_scores
from search.config import DIMENSIONS


def conversations(items: Sequence[EvalItem]) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": item.prompt}] for item in items]


def judge_items(items: Sequence[EvalItem], answers: Sequence[str]) -> list[JudgeItem]:
    if len(items) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(items)} eval items")
    return [JudgeItem.from_eval(item, answer) for item, answer in zip(items, answers)]


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


def score_objectives(items: Sequence[EvalItem], answers: Sequence[str], verdicts: Sequence[Verdict],
                     objectives: Sequence[str]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Everything a trial reports about its answers: ``(metrics, per_item)``.

    ``metrics``: ``wtr.<dim>`` for the seven judge dimensions, every objective under its plain
    name (a dimension's WTR, or a metric's mean over the items it scores; NaN when it scores
    none), and the judge counts (``judged_ok``, ``judge_unparseable``, ``judge_failed``).
    ``per_item``: every judge dimension and every metric objective -> {item id: score} (0/1
    win-or-tie for a dimension; unscored items left out), so that ``metrics[o]`` is the mean
    of ``per_item[o]`` and bootstrap intervals treat judge and metric objectives alike.

    ``items`` and ``answers`` are in the same order; ``verdicts`` are the judge's for them.
    Raises :class:`judges.answer_metrics.MetricError` when a metric fails on these answers
    (raises, wrong number of scores, a non-finite score): the trial fails, not the search.
    """
    if len(items) != len(answers):
        raise MetricError(f"{len(answers)} answers for {len(items)} eval items")
    dims = [o for o in objectives if o in DIMENSIONS]
    metric_names = [o for o in dict.fromkeys(objectives) if o not in DIMENSIONS]
    per_item = item_indicators(verdicts)
    per_metric = {name: metric_scores(name, items, answers) for name in metric_names}
    metrics = score(verdicts, dims)
    for name, scores in per_metric.items():
        metrics[name] = math.fsum(scores.values()) / len(scores) if scores else math.nan
    return metrics, per_item | per_metric


def mean_diff(metrics: Mapping[str, float], references: Mapping[str, Mapping[str, float]],
              sources: Sequence[str]) -> dict[str, float]:
    """WTR mean-diff: the merge's WTR minus the mean of its sources' WTRs, per dimension."""
    out = {}
    for dim in DIMENSIONS:
        values = [references[s][f"wtr.{dim}"] for s in sources if s in references]
        mine = metrics.get(f"wtr.{dim}", math.nan)
        out[f"meandiff.{dim}"] = mine - sum(values) / len(values) if values else math.nan
    return out


def intervals(per_item: Mapping[str, Mapping[str, float]], objectives: Sequence[str], *, prefix: str = "",
              n_resamples: int = 1000) -> dict[str, float]:
    """`<prefix><objective>_low` / `_high`: the 95 % percentile bootstrap over items of each
    objective's mean, i.e. of the very value reported beside it (seeded, so rewriting the
    files gives the same bounds)."""
    out: dict[str, float] = {}
    for o in objectives:
        ci = bootstrap_mean(np.fromiter(per_item.get(o, {}).values(), dtype=float), n_resamples=n_resamples)
        out[f"{prefix}{o}_low"], out[f"{prefix}{o}_high"] = ci.low, ci.high
    return out
