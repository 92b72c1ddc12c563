"""One trial: a plan merged, swapped in and answered on a leased worker, then judged and scored.

Trials are tiny Tune function trainables (a thousandth of a CPU) that lease a MergeWorker
from a Ray queue (`search/pool.py`), so the number of workers sets the concurrency.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import ray

from judges import EvalItem
from search.pool import Context, lease_and_run
from search.scoring import intervals, judge_items, mean_diff, score_objectives


def judge_answers(ctx: Context, answers: list[str], key: str) -> tuple[dict[str, float], float,
                                                                      dict[str, dict[str, float]]]:
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
            metrics, judge_s, items = judge_answers(ctx, run["answers"], json.dumps(plan, sort_keys=True))
            # a string crosses Tune's result path intact (nested dicts may be flattened)
            result["items_json"] = json.dumps(items)
            result |= metrics | mean_diff(metrics, ctx.references, ctx.sources)
            # each objective's 95 % interval travels with it, to Tune's callbacks and trackers too
            result |= intervals(items, ctx.objectives)
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
    """The Tune function trainable: one `evaluate_plan` of the plan Optuna suggested."""
    def soupsearch_trial(config: dict[str, Any]) -> None:
        from ray import tune

        tune.report(evaluate_plan(ctx, config["plan"]))

    return soupsearch_trial
