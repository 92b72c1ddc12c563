"""One trial: a plan merged, swapped in and answered on a leased worker, then judged and scored.

Trials are tiny Tune function trainables (a thousandth of a CPU) that lease a MergeWorker
from a Ray queue (`search/pool.py`), so the number of workers sets the concurrency.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Any

from judges import EvalItem
from search.judge_calls import ask_judges
from search.pool import Context, lease_and_run
from search.racing import Racing, dominating_trial
from search.scoring import intervals, judge_items, mean_diff, score_objectives


def judge_answers(ctx: Context, answers: list[str], key: str) -> tuple[dict[str, float], float,
                                                                      dict[str, dict[str, float]]]:
    """Score answers on one judge actor; a judge that died is waited for while Ray restarts it
    and asked again (`search/judge_calls.py`). Answer-metric objectives are computed here, from
    the answers and items (`score_objectives`): a metric that fails raises MetricError, which
    fails this trial only (`evaluate_plan`)."""
    eval_items = [EvalItem.from_record(i) for i in ctx.items]
    verdicts, judge_s = ask_judges(ctx, judge_items(eval_items, answers), key)
    metrics, per_item = score_objectives(eval_items, answers, verdicts, ctx.objectives)
    return metrics, judge_s, per_item


def no_text_error(answers: list[str]) -> str:
    """A model that stops producing text is a failed trial, not a perfectly concise one."""
    if answers and not any(a.strip() for a in answers):
        return f"the merged model produced no text for any of the {len(answers)} prompts"
    return ""


def evaluate_plan(ctx: Context, plan: dict[str, Any], racing: Racing | None = None) -> dict[str, Any]:
    """Merge → swap → generate on a leased worker, then judge: one result row's metrics.

    With `racing` (search/racing.py) the trial answers and is judged on round 1's items first
    and stops there as `pruned` when a front trial beats even its best case on those items; otherwise it
    answers the other items (a second lease: the merge is repeated, ~1 s, and the worker is
    free while round 1 is judged) and is scored on all of them like any trial.

    Never raises for a bad plan, a lost worker or a failing judge: the row says `failed`
    and why, so whatever strategy asked for it goes on."""
    started = time.perf_counter()
    result: dict[str, Any] = {o: math.nan for o in ctx.objectives}
    result |= {"method": plan["merge_method"], "status": "failed", "error": ""}
    key = json.dumps(plan, sort_keys=True)
    if racing is None:
        answers = _answer(ctx, plan, result)
        if answers is not None:
            result |= _judge(ctx, answers, key)
    else:
        _race(ctx, plan, racing, key, result)
    result["trial_s"] = time.perf_counter() - started
    return result


def _answer(ctx: Context, plan: dict[str, Any], result: dict[str, Any]) -> list[str] | None:
    """The plan's answers to `ctx.prompts` on a leased worker; None (the reason in `result`) when
    the worker could not answer or the model produced no text. Seconds add up over rounds."""
    run = lease_and_run(ctx, plan)
    result |= {k: run[k] for k in ("worker", "node_id") if k in run}
    if "workers_lost" in run:
        result["workers_lost"] = result.get("workers_lost", 0) + run["workers_lost"]
    error = run.get("error") or no_text_error(run["answers"])
    if error:
        result["error"] = error
        result["empty_answers"] = run.get("empty_answers")
        return None
    for k in ("merge_s", "swap_s", "generate_s", "empty_answers"):
        result[k] = result.get(k, 0) + run[k]
    return run["answers"]


def _judge(ctx: Context, answers: list[str], key: str) -> dict[str, Any]:
    """The answers judged and scored: objectives, intervals, mean-diffs, per-item scores and the
    status (`failed` with the reason when an objective got no verdict or judging failed)."""
    out: dict[str, Any] = {}
    try:
        metrics, judge_s, items = judge_answers(ctx, answers, key)
        # a string crosses Tune's result path intact (nested dicts may be flattened)
        out["items_json"] = json.dumps(items)
        out |= metrics | mean_diff(metrics, ctx.references, ctx.sources)
        # each objective's 95 % interval travels with it, to Tune's callbacks and trackers too
        out |= intervals(items, ctx.objectives)
        out["judge_s"] = judge_s
        missing = [o for o in ctx.objectives if math.isnan(metrics[o])]
        out["status"] = "ok" if not missing else "failed"
        if missing:
            out["error"] = f"no verdict could be scored on {missing} (judge failures: " \
                           f"{metrics['judge_failed']}, unparseable: {metrics['judge_unparseable']})"
    except Exception as err:  # noqa: BLE001  (judge actor crashed: record, keep searching)
        out["error"] = f"judging failed: {type(err).__name__}: {str(err)[:300]}"
    return out


def _race(ctx: Context, plan: dict[str, Any], racing: Racing, key: str, result: dict[str, Any]) -> None:
    """Round 1, the decision against the current front, then (if it survives) round 2 and the
    scores over every item. A round 1 that scores no objective decides nothing: round 2 runs."""
    first, rest = list(racing.first), racing.rest(len(ctx.items))
    answers = _answer(on_items(ctx, first), plan, result)
    if answers is None:
        return
    round1 = _judge(on_items(ctx, first), answers, key)
    beaten_by = None
    if round1.get("status") == "ok":
        beaten_by = dominating_trial(json.loads(round1["items_json"]), racing.current_front(), ctx.objectives)
    if beaten_by is not None:
        # its round-1 scores and intervals are kept; `pruned_by` names the front trial that beat its best case
        result |= round1 | {"status": "pruned", "rounds_done": 1, "items_judged": len(first), "pruned_by": beaten_by}
        return
    more = _answer(on_items(ctx, rest), plan, result)
    if more is None:
        return
    merged = [""] * len(ctx.items)
    for i, answer in zip(first + rest, answers + more):
        merged[i] = answer
    # round 1's verdicts come from the judge's verdict cache; the scores are those of an unraced trial
    result |= _judge(ctx, merged, key) | {"rounds_done": 2, "items_judged": len(ctx.items)}
    result["judge_s"] = result.get("judge_s", 0.0) + round1.get("judge_s", 0.0)


def on_items(ctx: Context, indices: list[int]) -> Context:
    """The same pool and judges, asked about these search items only (a racing round)."""
    return replace(ctx, prompts=[ctx.prompts[i] for i in indices], items=[ctx.items[i] for i in indices])


def make_trainable(ctx: Context, racing: Racing | None = None):
    """The Tune function trainable: one `evaluate_plan` of the plan Optuna suggested (raced on
    items when `racing` is given)."""
    def soupsearch_trial(config: dict[str, Any]) -> None:
        from ray import tune

        tune.report(evaluate_plan(ctx, config["plan"], racing))

    return soupsearch_trial
