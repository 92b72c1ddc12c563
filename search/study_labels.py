"""What optuna-dashboard shows of a run's Optuna study: the objectives by name, each trial's
method, status and intervals, and the front's held-out scores, so its tables read without the CSV.

Ray's OptunaSearch tells Optuna the objective values and nothing else: the dashboard labels
the objectives 0–3 and its trial table has no method and no reason for a failure. The
objective names are study data (`study.set_metric_names`), written whenever the study is
opened, a resumed one included. Trial attributes are written by the searcher just before it
tells Optuna the result (`search.samplers.make_searcher`). Optuna refuses attributes on a
finished trial, and the front is validated on the held-out items after the search, so the
held-out scores go on the study instead (`holdout.trial_NNNN`, the dashboard's "Study User
Attributes").
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from search.report import HOLDOUT
from search.pareto import is_finite_number

#: row keys copied to a trial's user attributes when they are text
TEXT_ATTRIBUTES = ("method", "status", "error")


def name_objectives(study: optuna.Study, objectives: Sequence[str]) -> None:
    """Name the study's values after the objectives (idempotent, so a resumed run does it again)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names, Optuna ≥ 3.2
        study.set_metric_names(list(objectives))


def trial_attributes(result: Mapping[str, Any] | None, objectives: Sequence[str]) -> dict[str, Any]:
    """A finished trial's user attributes: method, status, error (when there is one), each
    objective's interval and the trial's seconds. Only finite numbers: NaN is not JSON, and the
    dashboard reads the attributes as JSON in the browser. No result (the trial's process
    crashed) is a failed trial."""
    if result is None:
        return {"status": "failed"}
    attrs: dict[str, Any] = {k: result[k] for k in TEXT_ATTRIBUTES if isinstance(result.get(k), str) and result[k]}
    numbers = [f"{o}_{end}" for o in objectives for end in ("low", "high")] + ["trial_s"]
    return attrs | {k: float(result[k]) for k in numbers if is_finite_number(result.get(k))}


def record_holdout(study: optuna.Study, rows: Sequence[Mapping[str, Any]]) -> int:
    """Each validated trial's held-out scores and intervals as the study attribute
    `holdout.trial_NNNN` ({objective: score, objective_low: …, items: n}); returns how many."""
    recorded = 0
    for row in rows:
        scores = {k.removeprefix(HOLDOUT): float(v) for k, v in row.items()
                  if k.startswith(HOLDOUT) and is_finite_number(v)}
        if scores:
            items = row.get("holdout_items")
            study.set_user_attr(f"holdout.trial_{int(row['trial_number']):04d}",
                                scores | ({"items": int(items)} if items is not None else {}))
            recorded += 1
    return recorded
