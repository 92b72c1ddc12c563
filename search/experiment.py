"""Opening an experiment: preflight, the experiment folder, the worker pool, and the base and
sources scored as reference points (or read back on resume), with the objective health check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ray
import yaml

from judges import EvalSet
from judges.answer_metrics import MetricError
from merging import ModelFolder
from search.config import SearchConfig
from search.console import console
from search.constraints import Constraint, parse_constraint
from search.health import ObjectiveHealth, objective_health
from search.holdout import holdout_scores, write_split
from search.log_lines import reference_line
from search.models import resolve_models
from search.pool import Context, lease_and_run, start_pool, start_ray, worker_info
from search.preflight import PreflightError, check_inputs, check_memory, check_placement, holdout_split
from search.results import read_items, read_references, write_items, write_references
from search.scoring import intervals
from search.trial import judge_answers


def run_preflight(config: SearchConfig, models: dict[str, str]) -> EvalSet:
    """Models, eval set and judge first (cheap, no Ray), then Ray up and placement; one
    PreflightError lists every problem. Returns the eval set the search will use."""
    eval_set, problems = check_inputs(config, models)
    start_ray(config)
    nodes = ray.nodes()
    problems += check_placement(config, nodes) + check_memory(config, models, nodes)
    if problems:
        raise PreflightError(problems)
    console.print("preflight ok: models compatible, eval set valid, judge answers, workers placeable")
    return eval_set


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
            for d, scores in (read_items(exp_dir, f"{prefix}{key}") or {}).items():
                out.setdefault(key, {}).setdefault(d, {}).update(scores)
    return out


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
            metrics, _, items = judge_answers(ctx, run["answers"][:n_search], key)
            held = judge_answers(ctx.on_holdout(), run["answers"][n_search:], key) if ctx.holdout_items else None
        except MetricError as err:  # before any trial: a metric that fails on a source fails the run now
            raise RuntimeError(f"reference model {key!r} could not be scored: {err}") from err
        write_items(exp_dir, f"ref_{key}", items)
        # wtr.<dim> of every dimension, and every objective (metrics too) under its plain name
        references[key] = {k: v for k, v in metrics.items() if k.startswith("wtr.") or k in ctx.objectives}
        references[key] |= intervals(items, ctx.objectives)
        if held is not None:
            write_items(exp_dir, f"holdout_ref_{key}", held[2])
            references[key] |= holdout_scores(held[0], held[2], ctx.objectives)
        console.print(reference_line(key, references[key], ctx.objectives), markup=False, highlight=False)
    return references
