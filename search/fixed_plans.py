"""Fixed lists of plans evaluated like trials (`FixedPlans`): the model-soups baselines
(`run_soups`) and the studies use the search's workers, judge and files, each plan once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from search.console import console
from search.experiment import Experiment
from search.recorder import ResultsCallback, finish_experiment
from search.soups import greedy_soup, soup_plan, soup_score
from search.trial import evaluate_plan


class FixedPlans:
    """Evaluate given plans through the search's workers, judge and files, each once.

    A plan is known by its `params` (what the row's `params` column holds); on resume,
    plans already in trials.parquet are read back instead of evaluated again. The soups
    baselines and the studies use this: same rows, same files as a search."""

    def __init__(self, exp: Experiment, *, resume: bool = False):
        import pandas as pd

        path = exp.dir / "trials.parquet"
        rows = pd.read_parquet(path).to_dict("records") if resume and path.exists() else []
        self.exp = exp
        self.recorder = ResultsCallback(exp.dir, exp.ctx, exp.constraints, rows)
        self.done = {r["params"]: r for r in rows}
        self.started = time.perf_counter()

    def evaluate(self, params: dict[str, Any], plan: dict[str, Any], label: str = "plan") -> dict[str, Any]:
        key = json.dumps(params, sort_keys=True)
        if key not in self.done:
            number = len(self.recorder.rows)
            result = evaluate_plan(self.exp.ctx, plan)
            self.recorder.record(f"{label}-{number}", {"plan": plan, "trial_number": number, **params}, result)
            self.done[key] = self.recorder.rows[-1]
        return self.done[key]

    def finish(self, what: str) -> Path:
        return finish_experiment(self.exp.dir, self.recorder, what, self.started)


def run_soups(strategy: str, exp: Experiment, *, resume: bool = False) -> Path:
    """The model-soups baselines, evaluated like trials: same workers, judge and files.

    Each soup tried is one row (trial number in order, `params` naming the ingredients)."""
    runner = FixedPlans(exp, resume=resume)
    ctx = exp.ctx

    def evaluate(ingredients: list[str]) -> float:
        params = {"strategy": strategy, "ingredients": ingredients}
        return soup_score(runner.evaluate(params, soup_plan(ingredients, "base"), strategy), ctx.objectives)

    if strategy == "uniform_soup":
        evaluate(list(ctx.sources))
    else:
        source_scores = {s: soup_score(ctx.references[s], ctx.objectives) for s in ctx.sources}
        soup = greedy_soup(source_scores, evaluate)
        for tried, value, kept in soup.tried:
            console.print(f"greedy soup: {'+'.join(tried)} → {value:.3f} {'kept' if kept else 'left out'}")
        console.print(f"greedy soup: [bold]{' + '.join(soup.ingredients)}[/bold]")
    return runner.finish("(no Optuna study: soups are not sampled)")
