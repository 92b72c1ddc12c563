"""The search driver: an opened experiment searched with Ray Tune + Optuna (or the soups baselines).

Optuna proposes through `OptunaSearch(space=<define-by-run fn>, metric=[...], mode=[...])` —
the lists go on the searcher, not on TuneConfig — with its study in RDB storage (SQLite in the
experiment folder by default) so optuna-dashboard can show the front, with the objectives
named and the trials labelled (`search/study_labels.py`). Each trial is `search/trial.py`'s
trainable; `search/recorder.py` rewrites the result files and prints the current front after
every trial; `experiment.trackers` add Tune's MLflow / W&B callbacks (`search/trackers.py`);
`search/resume.py` reads a stopped run back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.config import SearchConfig
from search.console import console
from search.experiment import Experiment, open_experiment
from search.fixed_plans import run_soups
from search.pool import close_pool
from search.racing import start_racing, stop_racing
from search.recorder import ResultsCallback, finish_experiment, tune_callback
from search.resume import recover_rows
from search.samplers import PlanSpace, make_sampler, make_searcher
from search.space import grid_points
from search.study_labels import name_objectives, record_holdout
from search.trackers import tracker_callbacks
from search.trial import make_trainable

if TYPE_CHECKING:
    import optuna


def run_search(config: SearchConfig, exp_dir: Path | None = None, *, resume: bool = False,
               points: list[dict[str, Any]] | None = None) -> Path:
    """Run (or with `resume`, continue) the search; returns the experiment folder.

    `points`: Optuna parameter sets to try first (e.g. every method at its defaults),
    then the sampler takes over. Resuming keeps every finished trial (rows in
    trials.parquet, trials in the Optuna study), marks trials that were running when the
    driver died as failed in the study (their results never arrived) and runs only the
    trials still missing."""
    exp = open_experiment(config, exp_dir, resume=resume)
    if config.search.strategy != "optuna":
        return run_soups(config.search.strategy, exp, resume=resume)
    return run_optuna(config, exp, resume=resume, points=points)


def run_optuna(config: SearchConfig, exp: Experiment, *, resume: bool = False,
               points: list[dict[str, Any]] | None = None) -> Path:
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    ctx, exp_dir = exp.ctx, exp.dir
    storage_url = config.experiment.storage or f"sqlite:///{exp_dir / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(storage_url)
    rows = recover_rows(exp_dir, storage, config.experiment.name, ctx.objectives) if resume else []
    space = PlanSpace(config.space, exp.sources, "base", exp.n_layers, pairwise=config.search.sampler == "grid",
                      merge_seed=config.search.merge_seed)
    # Enqueued points live in the study (WAITING until run), so a resumed run must not add them again.
    points = None if resume else points
    searcher = make_searcher(OptunaSearch)(space=space, metric=ctx.objectives, mode=["max"] * len(ctx.objectives),
                                           sampler=make_sampler(config, exp.sources), study_name=config.experiment.name,
                                           storage=storage, points_to_evaluate=points or None,
                                           constraints=exp.constraints, references=ctx.references)
    study = optuna.load_study(study_name=config.experiment.name, storage=storage)  # made by the searcher
    name_objectives(study, ctx.objectives)
    n_trials = config.search.n_trials
    if config.search.sampler == "grid":
        n_trials = min(n_trials, len(grid_points(config.space, exp.sources)))
    n_trials -= len(rows)
    racing, racing_note = start_racing(config.search.racing, config.search.n_trials, ctx.items, ctx.namespace,
                                       config.search.seed)
    console.print(racing_note)
    recorder = ResultsCallback(exp_dir, ctx, exp.constraints, rows, racing)
    if resume:
        console.print(f"resuming: {len(rows)} finished trials kept, {max(n_trials, 0)} to run")
    if n_trials <= 0:
        return finish_search(study, recorder, storage_url, time.perf_counter())
    run_name = "tune" if not resume else f"tune-resume-{len(list(exp_dir.glob('tune-resume-*'))) + 1}"
    tuner = tune.Tuner(
        tune.with_resources(make_trainable(ctx, racing), {"cpu": 0.001}),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n_trials,
                                    max_concurrent_trials=concurrent_trials(config)),
        run_config=tune.RunConfig(name=run_name, storage_path=str(exp_dir.resolve()), verbose=0,
                                  callbacks=[tune_callback(recorder), *tracker_callbacks(config.experiment, exp_dir)]),
    )
    started = time.perf_counter()
    with quiet_tune_output():
        tuner.fit()
    try:
        return finish_search(study, recorder, storage_url, started)
    finally:
        stop_racing(racing)
        close_pool(ctx)


@contextlib.contextmanager
def quiet_tune_output() -> Iterator[None]:
    """Tune's own output off: the recorder prints each trial and the front. Ray's new output
    engine prints a "Configuration for experiment" box and a TensorBoard hint even at
    `verbose=0`; its older engine (RAY_AIR_NEW_OUTPUT=0, read when the Tuner runs) prints
    nothing at `verbose=0`. The line saying where it wrote its state goes too."""
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    tune_log = logging.getLogger("ray.tune.tune")
    level = tune_log.level
    tune_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        tune_log.setLevel(level)
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved


def concurrent_trials(config: SearchConfig) -> int:
    """Trials Tune runs at once: one per merge worker, plus `workers.trials_ahead` that wait
    for a worker while the trials before them are judged (a trial leases its worker only for
    merge, swap and generate: `search.pool.lease_and_run`)."""
    ahead = config.workers.trials_ahead
    if ahead is None:
        ahead = 0 if config.judging.judge.backend == "rubric" else config.workers.judges
    return config.workers.count + ahead


def finish_search(study: optuna.Study, recorder: ResultsCallback, storage_url: str, started: float) -> Path:
    """`finish_experiment` (the front validated on the held-out items, the files and REPORT.md),
    then the held-out scores put on the study, where optuna-dashboard shows them."""
    exp_dir = finish_experiment(recorder.exp_dir, recorder, storage_url, started)
    record_holdout(study, recorder.rows)
    return exp_dir
