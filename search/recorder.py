"""Recording trials: one row per finished trial, the result files rewritten, the trial and the
front printed (`ResultsCallback`, and the Tune callback that feeds it); at the end, the front
validated on the held-out items and REPORT.md written (`finish_experiment`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from search.console import console
from search.constraints import Constraint
from search.experiment import reference_items
from search.health import objective_health
from search.holdout import validate_front
from search.log_lines import front_lines, front_summary, trial_line
from search.metrics import ObjectiveGauges
from search.pool import Context
from search.racing import FrontPoint, Racing, front_points
from search.report import front_table, write_report
from search.results import dominating_references, front_indices, read_items, write_items, write_plan, write_results
from search.trial import evaluate_plan


class ResultsCallback:
    """Tune callback: one row per finished trial, files rewritten, front printed; with `racing`,
    the front also put on the racing board for the trials still running (a resumed run's too)."""

    def __init__(self, exp_dir: Path, ctx: Context, constraints: list[Constraint], rows: list[dict[str, Any]],
                 racing: Racing | None = None):
        self.exp_dir, self.ctx, self.constraints = exp_dir, ctx, constraints
        self.rows = rows
        self.racing = racing
        self.gauges = ObjectiveGauges(exp_dir.name)
        if racing is not None:
            publish_front(racing, front_points(rows, front_indices(rows, ctx.objectives, constraints, ctx.references),
                                               self.items_of))

    def record(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        number = int(config["trial_number"])
        params = {k: v for k, v in config.items() if k not in ("plan", "trial_number")}
        row = {"trial_number": number, "trial_id": trial_id, "params": json.dumps(params, sort_keys=True)}
        row |= {k: v for k, v in result.items() if not isinstance(v, dict) and k not in ("config", "items_json")}
        if result.get("items_json"):
            per_item = json.loads(result["items_json"])
            write_items(self.exp_dir, f"trial_{number:04d}", per_item)  # the row's intervals came with the result
        self.rows.append(row)
        write_plan(self.exp_dir, number, config["plan"])
        front = write_results(self.exp_dir, self.rows, self.ctx.references, self.ctx.objectives, self.constraints)
        if self.racing is not None:
            publish_front(self.racing, front_points(self.rows, front, self.items_of))
        self.gauges.update(self.rows, front, self.ctx.objectives)
        console.print(trial_line(row, self.ctx.objectives), markup=False, highlight=False,
                      style=None if row.get("status") == "ok" else "red")
        title = f"Pareto front after {len(self.rows)} trials (search items)"
        if console.is_terminal:
            self.show(front, title)
        else:
            console.print(front_summary(self.rows, front, title), markup=False, highlight=False, soft_wrap=True)

    def items_of(self, number: int) -> dict[str, dict[str, float]] | None:
        """A recorded trial's per-item scores (items/trial_NNNN.parquet, a resumed run's too)."""
        return read_items(self.exp_dir, f"trial_{number:04d}")

    def show(self, front: list[int], title: str) -> str:
        """Print the front and return it as a table (for REPORT.md).

        On a terminal the table (full names whatever the width); anywhere else (a Ray job's log
        in the dashboard, `| tee`, CI) a `name=value` line per record, because those viewers may
        collapse the spaces that align the table's columns. rich decides what a terminal is;
        TTY_COMPATIBLE=1 or 0 overrides it."""
        beaten = {i: dominating_references(self.rows[i], self.ctx.references, self.ctx.objectives) for i in front}
        table = front_table(self.rows, front, self.ctx.references, self.ctx.objectives, title, beaten)
        text = table if console.is_terminal else "\n".join(
            front_lines(self.rows, front, self.ctx.references, self.ctx.objectives, title, beaten))
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        return table


def publish_front(racing: Racing, points: list[FrontPoint]) -> None:
    """The front on the racing board (a module function, so a test can add a point to it)."""
    racing.publish(points)


def tune_callback(recorder: ResultsCallback):
    """A `ray.tune.Callback` that hands every finished (or crashed) trial to the recorder."""
    from ray import tune

    class _Callback(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            recorder.record(trial.trial_id, trial.config, result)

        def on_trial_error(self, iteration, trials, trial, **info):
            recorder.record(trial.trial_id, trial.config, {"status": "failed", "method": trial.config["plan"][
                "merge_method"], "error": f"trial process error: {trial.error_file or 'see Ray logs'}"})

    return _Callback()


def finish_experiment(exp_dir: Path, recorder: ResultsCallback, storage_url: str, started: float) -> Path:
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
               f"{len(recorder.rows)} trials, {sum(r.get('status') == 'ok' for r in recorder.rows)} ok"
               f"{_pruned_note(recorder.rows)}; {len(front)} on the front"]
    report = write_report(exp_dir, title=f"soupsearch: {exp_dir.name}", summary=summary, health=health, table=table)
    console.print(f"files: {exp_dir / 'trials.parquet'}, {exp_dir / 'pareto.csv'}, {exp_dir / 'pareto.html'}, "
                  f"{report}, {exp_dir / 'hypervolume.csv'}, {exp_dir / 'plans'}/, optuna study {storage_url}",
                  soft_wrap=True)
    return exp_dir


def _pruned_note(rows: list[dict[str, Any]]) -> str:
    """`, 5 pruned after round 1 (racing on items)` when racing stopped some trials, else nothing."""
    pruned = sum(r.get("status") == "pruned" for r in rows)
    return f", {pruned} pruned after round 1 (racing on items)" if pruned else ""
