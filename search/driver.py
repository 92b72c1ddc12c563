"""The search driver: Ray up, workers and judges placed, references scored, Tune + Optuna run.

Trials are tiny Tune function trainables (a thousandth of a CPU) that lease a MergeWorker
from a Ray queue, so the number of workers sets the concurrency. Optuna proposes through
`OptunaSearch(space=<define-by-run fn>, metric=[...], mode=[...])` — the lists go on the
searcher, not on TuneConfig — with its study in RDB storage (SQLite in the experiment
folder by default) so optuna-dashboard can show the front. A callback rewrites the
result files and prints the current front after every trial.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import yaml

from judges import EvalItem, EvalSet
from judges.answer_metrics import MetricError
from merging import ModelFolder
from search.config import DIMENSIONS, SearchConfig
from search.console import console
from search.constraints import Constraint, parse_constraint
from search.health import ObjectiveHealth, objective_health
from search.holdout import holdout_scores, validate_front, write_split
from search.metrics import ObjectiveGauges
from search.pool import Context, close_pool, lease_and_run, start_pool, start_ray, worker_info
from search.preflight import PreflightError, check_inputs, check_placement, holdout_split
from search.report import front_table, write_report
from search.results import (dominating_references, front_indices, read_items, read_references, write_items,
                            write_plan, write_references, write_results)
from search.samplers import PlanSpace, make_sampler, make_searcher
from search.samplers import is_finite_number as _finite
from search.scoring import intervals, judge_items, mean_diff, score_objectives
from search.soups import greedy_soup, soup_plan, soup_score
from search.space import grid_points



def resolve_models(config: SearchConfig, *, homogeneous: Sequence[str] = ()) -> tuple[dict[str, str], list[str]]:
    """Model keys → folders, and the source keys (everything but "base"); preflight checks them.
    `homogeneous`: with the example family, also its seeded re-runs of these methods (`dpo-s1`)."""
    if config.models.example:
        from search.example_family import prepare_example

        paths = {k: str(v) for k, v in prepare_example(homogeneous=tuple(homogeneous)).items()}
    else:
        paths = {"base": config.models.base, **config.models.sources}
    return paths, [k for k in paths if k != "base"]


def run_preflight(config: SearchConfig, models: dict[str, str]) -> EvalSet:
    """Models, eval set and judge first (cheap, no Ray), then Ray up and placement; one
    PreflightError lists every problem. Returns the eval set the search will use."""
    eval_set, problems = check_inputs(config, models)
    start_ray(config)
    problems += check_placement(config, ray.nodes())
    if problems:
        raise PreflightError(problems)
    console.print("preflight ok: models compatible, eval set valid, judge answers, workers placeable")
    return eval_set


def _judge(ctx: Context, answers: list[str], key: str) -> tuple[dict[str, float], float, dict[str, dict[str, float]]]:
    """Score answers on one judge actor; a judge that died (Ray restarts it) is asked again.
    Answer-metric objectives are computed here, from the answers and items (`score_objectives`):
    a metric that fails raises MetricError, which fails this trial only (`evaluate_plan`)."""
    eval_items = [EvalItem.from_record(i) for i in ctx.items]
    items = judge_items(eval_items, answers)
    first = hash(key) % len(ctx.judges)
    for attempt in range(ctx.retries + 1):
        name = ctx.judges[(first + attempt) % len(ctx.judges)]
        try:
            verdicts, judge_s = ray.get(ray.get_actor(name, namespace=ctx.namespace).judge_items.remote(items))
        except ray.exceptions.RayActorError:
            if attempt == ctx.retries:
                raise
            continue
        metrics, per_item = score_objectives(eval_items, answers, verdicts, ctx.objectives)
        return metrics, judge_s, per_item
    raise AssertionError("unreachable")


def no_text_error(answers: list[str]) -> str:
    """A model that stops producing text is a failed trial, not a perfectly concise one."""
    if answers and not any(a.strip() for a in answers):
        return f"the merged model produced no text for any of the {len(answers)} prompts"
    return ""


def evaluate_plan(ctx: Context, plan: dict[str, Any]) -> dict[str, Any]:
    """Merge → swap → generate on a leased worker, then judge: one result row's metrics.

    Never raises for a bad plan, a lost worker or a failing judge: the row says `failed`
    and why, so whatever strategy asked for it goes on."""
    started = time.perf_counter()
    result: dict[str, Any] = {o: math.nan for o in ctx.objectives}
    result |= {"method": plan["merge_method"], "status": "failed", "error": ""}
    run = lease_and_run(ctx, plan)
    result |= {k: run[k] for k in ("worker", "node_id", "workers_lost") if k in run}
    error = run.get("error") or no_text_error(run["answers"])
    if error:
        result["error"] = error
        result["empty_answers"] = run.get("empty_answers")
    else:
        try:
            metrics, judge_s, items = _judge(ctx, run["answers"], json.dumps(plan, sort_keys=True))
            # a string crosses Tune's result path intact (nested dicts may be flattened)
            result["items_json"] = json.dumps(items)
            result |= metrics | mean_diff(metrics, ctx.references, ctx.sources)
            result |= {k: run[k] for k in ("merge_s", "swap_s", "generate_s", "empty_answers")}
            result["judge_s"] = judge_s
            missing = [o for o in ctx.objectives if math.isnan(metrics[o])]
            result["status"] = "ok" if not missing else "failed"
            if missing:
                result["error"] = f"no verdict could be scored on {missing} (judge failures: " \
                                  f"{metrics['judge_failed']}, unparseable: {metrics['judge_unparseable']})"
        except Exception as err:  # noqa: BLE001  (judge actor crashed: record, keep searching)
            result["error"] = f"judging failed: {type(err).__name__}: {str(err)[:300]}"
    result["trial_s"] = time.perf_counter() - started
    return result


def make_trainable(ctx: Context):
    def soupsearch_trial(config: dict[str, Any]) -> None:
        from ray import tune

        tune.report(evaluate_plan(ctx, config["plan"]))

    return soupsearch_trial


class ResultsCallback:
    """Tune callback: one row per finished trial, files rewritten, front printed."""

    def __init__(self, exp_dir: Path, ctx: Context, constraints: list[Constraint], rows: list[dict[str, Any]]):
        self.exp_dir, self.ctx, self.constraints = exp_dir, ctx, constraints
        self.rows = rows
        self.gauges = ObjectiveGauges(exp_dir.name)

    def record(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        number = int(config["trial_number"])
        params = {k: v for k, v in config.items() if k not in ("plan", "trial_number")}
        row = {"trial_number": number, "trial_id": trial_id, "params": json.dumps(params, sort_keys=True)}
        row |= {k: v for k, v in result.items() if not isinstance(v, dict) and k not in ("config", "items_json")}
        if result.get("items_json"):
            per_item = json.loads(result["items_json"])
            write_items(self.exp_dir, f"trial_{number:04d}", per_item)
            row |= intervals(per_item, self.ctx.objectives)
        self.rows.append(row)
        write_plan(self.exp_dir, number, config["plan"])
        front = write_results(self.exp_dir, self.rows, self.ctx.references, self.ctx.objectives, self.constraints)
        self.gauges.update(self.rows, front, self.ctx.objectives)
        status = "ok" if row.get("status") == "ok" else f"[red]failed[/red]: {row.get('error', '')[:160]}"
        console.print(f"trial {number} ({row.get('method')}) {status}")
        self.show(front, f"Pareto front after {len(self.rows)} trials (search items)")

    def show(self, front: list[int], title: str) -> str:
        """Print the front table as plain text (full names whatever the width) and return it."""
        beaten = {i: dominating_references(self.rows[i], self.ctx.references, self.ctx.objectives) for i in front}
        table = front_table(self.rows, front, self.ctx.references, self.ctx.objectives, title, beaten)
        console.print(table, markup=False, highlight=False, soft_wrap=True)
        return table


def _tune_callback(recorder: ResultsCallback):
    from ray import tune

    class _Callback(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            recorder.record(trial.trial_id, trial.config, result)

        def on_trial_error(self, iteration, trials, trial, **info):
            recorder.record(trial.trial_id, trial.config, {"status": "failed", "method": trial.config["plan"][
                "merge_method"], "error": f"trial process error: {trial.error_file or 'see Ray logs'}"})

    return _Callback()


@dataclass
class Experiment:
    """An opened experiment: folder, live pool (with the references scored) and constraints."""

    dir: Path
    ctx: Context
    constraints: list[Constraint]
    n_layers: int
    sources: list[str]
    health: list[ObjectiveHealth] = field(default_factory=list)


def open_experiment(config: SearchConfig, exp_dir: Path | None = None, *, resume: bool = False,
                    models: tuple[dict[str, str], list[str]] | None = None) -> Experiment:
    """Preflight, the experiment folder, the pool, and the base and sources scored (or read
    back on resume): everything every strategy and study starts from."""
    exp_dir = exp_dir or config.experiment_dir()
    if not resume and (exp_dir / "trials.parquet").exists():
        raise FileExistsError(f"{exp_dir} already holds a search: continue it with --resume {exp_dir}, "
                              f"or set experiment.name to start a new one")
    paths, sources = models or resolve_models(config)
    constraints = [parse_constraint(c, list(paths), config.search.objectives) for c in config.search.constraints]
    eval_set = run_preflight(config, paths)
    search_set, held_out = holdout_split(config, eval_set)
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    write_split(exp_dir, search_set, held_out)
    with ModelFolder(paths["base"]) as base:
        n_layers = base.n_layers()
    console.print(f"[bold]soupsearch[/bold] {config.experiment.name}: {len(sources)} sources {sources}, "
                  f"{len(search_set)} search items + {len(held_out)} held out, {config.workers.count} worker(s) "
                  f"→ {exp_dir}")
    ctx = start_pool(config, paths, search_set, exp_dir, sources, held_out)
    for info in worker_info(ctx):
        console.print(f"{info['worker']}: node {info.get('node_id', '?')[:12]}, pid {info.get('pid')}, "
                      f"{info.get('backend', info.get('error'))}")
    known = read_references(exp_dir)
    missing = [k for k in ["base", *sources] if k not in known]
    ctx.references = known | (score_references(ctx, missing, exp_dir) if missing else {})
    write_references(exp_dir, ctx.references)
    health = objective_health(reference_items(exp_dir, ctx.references), ctx.objectives)
    for h in health:
        console.print(("" if h.ok else "[yellow]warning:[/yellow] ") + h.message(), soft_wrap=True)
    return Experiment(exp_dir, ctx, constraints, n_layers, sources, health)


def reference_items(exp_dir: Path, references: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """model -> objective -> item -> score over every item a reference answered: the search
    items (items/ref_MODEL) and the held-out ones (items/holdout_ref_MODEL). The health check
    reads them all: it guides nothing, so it may use the held-out items, and more items tell
    a real difference from noise."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key in references:
        for prefix in ("ref_", "holdout_ref_"):
            frame = read_items(exp_dir, f"{prefix}{key}")
            for d, g in (frame.groupby("dimension") if frame is not None else ()):
                out.setdefault(key, {}).setdefault(d, {}).update(zip(g["item_id"], g["win_tie"]))
    return out


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
    n_trials = config.search.n_trials
    if config.search.sampler == "grid":
        n_trials = min(n_trials, len(grid_points(config.space, exp.sources)))
    n_trials -= len(rows)
    recorder = ResultsCallback(exp_dir, ctx, exp.constraints, rows)
    if resume:
        console.print(f"resuming: {len(rows)} finished trials kept, {max(n_trials, 0)} to run")
    if n_trials <= 0:
        return _finish(exp_dir, recorder, storage_url, time.perf_counter())
    run_name = "tune" if not resume else f"tune-resume-{len(list(exp_dir.glob('tune-resume-*'))) + 1}"
    tuner = tune.Tuner(
        tune.with_resources(make_trainable(ctx), {"cpu": 0.001}),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n_trials,
                                    max_concurrent_trials=config.workers.count),
        run_config=tune.RunConfig(name=run_name, storage_path=str(exp_dir.resolve()), verbose=0,
                                  callbacks=[_tune_callback(recorder)]),
    )
    started = time.perf_counter()
    tuner.fit()
    try:
        return _finish(exp_dir, recorder, storage_url, started)
    finally:
        close_pool(ctx)


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
        return _finish(self.exp.dir, self.recorder, what, self.started)


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


def _finish(exp_dir: Path, recorder: ResultsCallback, storage_url: str, started: float) -> Path:
    """Validate the front on the held-out items (while the pool is up), then write every file
    and REPORT.md and print the final table."""
    ctx = recorder.ctx
    front = front_indices(recorder.rows, ctx.objectives, recorder.constraints, ctx.references)
    validate_front(ctx, exp_dir, recorder.rows, front, evaluate_plan,
                   saved=lambda: write_results(exp_dir, recorder.rows, ctx.references, ctx.objectives,
                                               recorder.constraints))
    front = write_results(exp_dir, recorder.rows, ctx.references, ctx.objectives, recorder.constraints)
    table = recorder.show(front, f"final Pareto front ({len(front)} of {len(recorder.rows)} trials, "
                                 f"{(time.perf_counter() - started) / 60:.1f} min; 95 % intervals over items)")
    health = objective_health(reference_items(exp_dir, ctx.references), ctx.objectives)
    summary = [f"{len(ctx.sources)} sources ({', '.join(ctx.sources)}) and the base; objectives "
               f"{', '.join(ctx.objectives)}",
               f"{len(ctx.items)} search items, {len(ctx.holdout_items)} held-out items (eval_split.csv)",
               f"{len(recorder.rows)} trials, {sum(r.get('status') == 'ok' for r in recorder.rows)} ok; "
               f"{len(front)} on the front"]
    report = write_report(exp_dir, title=f"soupsearch: {exp_dir.name}", summary=summary, health=health, table=table)
    console.print(f"files: {exp_dir / 'trials.parquet'}, {exp_dir / 'pareto.csv'}, {exp_dir / 'pareto.html'}, "
                  f"{report}, {exp_dir / 'hypervolume.csv'}, {exp_dir / 'plans'}/, optuna study {storage_url}",
                  soft_wrap=True)
    return exp_dir


def recover_rows(exp_dir: Path, storage: Any, study_name: str, objectives: list[str]) -> list[dict[str, Any]]:
    """Finished trials of a stopped run: rows from trials.parquet, plus any trial the study
    completed after the last file write. A trial the study still calls RUNNING is completed
    with its row's values when the row made it to disk first (the driver died between
    writing the files and telling Optuna), and failed when its result never arrived."""
    import optuna
    import pandas as pd

    path = exp_dir / "trials.parquet"
    rows = pd.read_parquet(path).to_dict("records") if path.exists() else []
    known = {int(r["trial_number"]): r for r in rows}
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return rows
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            row = known.get(t.number, {})
            values = [row.get(o) for o in objectives] if row.get("status") == "ok" else []
            if values and all(_finite(v) for v in values):
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.COMPLETE, values)
            else:
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        elif t.state == optuna.trial.TrialState.COMPLETE and t.number not in known:
            rows.append({"trial_number": t.number, "method": t.params.get("method"), "status": "ok",
                         "params": json.dumps(t.params, sort_keys=True), "error": "", "recovered": True,
                         **dict(zip(objectives, t.values)),
                         **{f"wtr.{o}": v for o, v in zip(objectives, t.values) if o in DIMENSIONS}})
    return rows


def score_references(ctx: Context, keys: list[str], exp_dir: Path) -> dict[str, dict[str, float]]:
    """Base and every source under the same judge: reference points for plots, constraints and
    the objective health check. Each answers the search and the held-out items in one pass;
    both parts are judged apart (`holdout.<objective>` for the second)."""
    references = {}
    both = ctx.on_all_items()
    n_search = len(ctx.items)
    for key in keys:
        run = lease_and_run(both, key)
        if "error" in run:
            raise RuntimeError(f"reference model {key!r} could not be evaluated: {run['error']}")
        try:
            metrics, _, items = _judge(ctx, run["answers"][:n_search], key)
            held = _judge(ctx.on_holdout(), run["answers"][n_search:], key) if ctx.holdout_items else None
        except MetricError as err:  # before any trial: a metric that fails on a source fails the run now
            raise RuntimeError(f"reference model {key!r} could not be scored: {err}") from err
        write_items(exp_dir, f"ref_{key}", items)
        # wtr.<dim> of every dimension, and every objective (metrics too) under its plain name
        references[key] = {k: v for k, v in metrics.items() if k.startswith("wtr.") or k in ctx.objectives}
        references[key] |= intervals(items, ctx.objectives)
        if held is not None:
            write_items(exp_dir, f"holdout_ref_{key}", held[2])
            references[key] |= holdout_scores(held[0], held[2], ctx.objectives)
        console.print(f"reference {key}: " + ", ".join(f"{o}={metrics[o]:.3f}" for o in ctx.objectives))
    return references
