"""`run_search.py study soups|methods`: the papers' studies, run by the search's own machinery.

soups — the heterogeneous-soups study (Motyka et al.): LERP, SLERP of alignment vectors
on all parameters, and SLERP with normalization layers LERP'd, of every pair of variants
of different methods at λ ∈ {0.25, 0.5, 0.75} and of homogeneous pairs (two seeds of
one method) at λ = 0.5. Each merge is one row evaluated by `FixedPlans` (the workers,
judge and files of a search, resumable); the tables and figures are computed from those
files afterwards.

methods — the 3H-benchmark-style league: every registered method at its defaults (the
first trials, enqueued into the Optuna study) plus `study.search_budget` searched trials,
all through `run_optuna`; then a league table and Pareto-front membership.

No separate code path evaluates anything: a study is a search with a fixed or seeded
list of plans, so its rows can be exported, resumed and plotted like any search's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from merging import method_names
from search.config import SearchConfig, StudyConfig
from search.console import console
from search.driver import run_optuna
from search.experiment import open_experiment
from search.fixed_plans import FixedPlans
from search.models import resolve_models
from search.pool import close_pool
from search.space import default_point
from search.studies.tables import SoupPoint


class StudyError(ValueError):
    """The study's settings do not fit the models; the message names the field."""


def soup_points(study: StudyConfig, sources: list[str]) -> list[SoupPoint]:
    """Every merge of the soups study, heterogeneous pairs first."""
    homo = study.homogeneous if study.homogeneous is not None else [
        (m, f"{m}-s1") for m in study.example_homogeneous if m in sources and f"{m}-s1" in sources]
    reruns = {b for _, b in homo}
    firsts = [s for s in sources if s not in reruns]
    hetero = study.heterogeneous if study.heterogeneous is not None else [
        (a, b) for i, a in enumerate(firsts) for b in firsts[i + 1:]]
    for field, pairs in (("study.heterogeneous", hetero), ("study.homogeneous", homo)):
        unknown = sorted({m for pair in pairs for m in pair} - set(sources))
        if unknown:
            raise StudyError(f"{field}: {unknown} are not sources of this experiment ({', '.join(sources)})")
    if not hetero and not homo:
        raise StudyError("study: no pairs to merge (need two sources, or study.heterogeneous / homogeneous)")
    return ([SoupPoint("heterogeneous", a, b, m, lam) for m in study.soup_methods for a, b in hetero
             for lam in study.lambdas]
            + [SoupPoint("homogeneous", a, b, m, lam) for m in study.soup_methods for a, b in homo
               for lam in study.homogeneous_lambdas])


def soup_merge_plan(point: SoupPoint, base: str = "base") -> dict[str, Any]:
    """The merge plan of one soup; λ is the share of the second model for every method."""
    if point.method == "lerp":
        return {"merge_method": "linear", "parameters": {"normalize": False}, "dtype": "bfloat16",
                "models": [{"model": point.m1, "parameters": {"weight": 1.0 - point.lam}},
                           {"model": point.m2, "parameters": {"weight": point.lam}}]}
    return {"merge_method": "alignment_slerp", "base_model": base, "dtype": "bfloat16",
            "models": [{"model": point.m1}, {"model": point.m2}],
            "parameters": {"t": point.lam, "lerp_norms": point.method == "slerp_lerp_norms"}}


def run_soups_study(config: SearchConfig, exp_dir: Path | None = None, *, resume: bool = False) -> Path:
    from search.studies.report import write_soups_report

    started = time.perf_counter()
    # The soups study measures fixed merges and picks none, so no item is held back for a pick.
    config = config.model_copy(deep=True)
    config.eval.holdout = 0.0
    models = resolve_models(config, homogeneous=config.study.example_homogeneous)
    points = soup_points(config.study, models[1])  # before any expensive work: bad pairs fail fast
    exp = open_experiment(config, exp_dir, resume=resume, models=models)
    runner = FixedPlans(exp, resume=resume)
    for point in tqdm(points, desc="soups study", unit="merge"):
        runner.evaluate(point.params(), soup_merge_plan(point), "soup")
    runner.finish("(soups study: fixed plans, no Optuna study)")
    close_pool(exp.ctx)
    report = write_soups_report(config, exp.dir, models[0], time.perf_counter() - started)
    console.print(f"[bold]soups study[/bold]: {len(points)} merges → {report}")
    return exp.dir


def methods_config(config: SearchConfig) -> SearchConfig:
    """The search a methods study runs: every study method, defaults + budget trials."""
    methods = list(config.study.methods or method_names())
    study = config.model_copy(deep=True)
    study.space.methods = methods
    study.search.strategy = "optuna"
    if study.search.sampler == "grid":
        study.search.sampler = "tpe"
    study.search.n_trials = len(methods) + config.study.search_budget
    return study


def run_methods_study(config: SearchConfig, exp_dir: Path | None = None, *, resume: bool = False) -> Path:
    from search.studies.report import write_methods_report

    started = time.perf_counter()
    config = methods_config(config)
    exp = open_experiment(config, exp_dir, resume=resume)
    points = [default_point(m, config.space, exp.sources, exp.n_layers) for m in config.space.methods]
    run_optuna(config, exp, resume=resume, points=points)
    report = write_methods_report(config, exp.dir, points, time.perf_counter() - started)
    console.print(f"[bold]methods study[/bold]: {len(points)} methods → {report}")
    return exp.dir
