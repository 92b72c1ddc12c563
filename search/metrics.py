"""Objectives as Ray metrics, so the Ray dashboard's Metrics view (Prometheus + Grafana)
can plot the search live: one gauge sample per trial and objective, tagged with the
experiment, the trial number and whether the trial is on the current front. Front
membership changes as trials arrive, so every trial's gauges are re-set after each one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ray.util.metrics import Gauge

TAGS = ("experiment", "trial", "objective", "front")


class ObjectiveGauges:
    def __init__(self, experiment: str):
        self.experiment = experiment
        self.wtr = Gauge("soupsearch_trial_wtr", "win-tie rate of a trial on one objective", tag_keys=TAGS)
        self.seconds = Gauge("soupsearch_trial_seconds", "seconds per trial step (merge, swap, generate, judge)",
                             tag_keys=("experiment", "trial", "step"))
        self.counts = Gauge("soupsearch_trials", "finished trials by status", tag_keys=("experiment", "status"))
        self._was_on_front: set[str] = set()

    def update(self, rows: Sequence[dict[str, Any]], front: Sequence[int], objectives: Sequence[str]) -> None:
        on_front = set(front)
        now_on_front = {str(rows[i]["trial_number"]) for i in on_front}
        for trial in self._was_on_front - now_on_front:
            for objective in objectives:
                self.wtr.set(math.nan, tags={"experiment": self.experiment, "trial": trial, "objective": objective,
                                             "front": "yes"})
        self._was_on_front = now_on_front
        for i, row in enumerate(rows):
            trial = str(row["trial_number"])
            for objective in objectives:
                value = row.get(objective)
                if isinstance(value, float) and math.isfinite(value):
                    self.wtr.set(value, tags={"experiment": self.experiment, "trial": trial, "objective": objective,
                                              "front": "yes" if i in on_front else "no"})
        last = rows[-1]
        for step in ("merge_s", "swap_s", "generate_s", "judge_s"):
            value = last.get(step)
            if isinstance(value, float) and math.isfinite(value):
                self.seconds.set(value, tags={"experiment": self.experiment, "trial": str(last["trial_number"]),
                                              "step": step.removesuffix("_s")})
        for status in ("ok", "failed"):
            self.counts.set(sum(r.get("status") == status for r in rows),
                            tags={"experiment": self.experiment, "status": status})
