"""The front a user can trust: objective health, intervals beside every score, held-out
validation of the front, the export's pick on held-out scores, and tables that cut nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from judges import bootstrap_mean
from search.export import choose, leads_over_sources
from search.health import objective_health
from search.holdout import validate_front
from search.pool import Context
from search.report import format_table, front_table
from search.results import write_items
from search.scoring import intervals

ITEMS = [f"q{i:02d}" for i in range(20)]


def _per_item(rate: float, items=ITEMS) -> dict[str, float]:
    """The first round(rate·n) items win or tie, the rest lose."""
    k = round(rate * len(items))
    return {i: 1.0 if j < k else 0.0 for j, i in enumerate(items)}


def test_a_constant_objective_is_reported_as_unable_to_guide_the_search():
    per_model = {m: {"proactivity": _per_item(1.0), "conciseness": _per_item(r)}
                 for m, r in (("base", 0.2), ("dpo", 1.0), ("kto", 0.25), ("orpo", 0.95))}
    health = {h.objective: h for h in objective_health(per_model, ["proactivity", "conciseness"])}
    assert health["proactivity"].message() == \
        "proactivity: all 4 reference models score 1.000 — this objective cannot guide the search"
    assert not health["proactivity"].ok and health["proactivity"].constant
    assert health["conciseness"].ok
    assert health["conciseness"].spread == pytest.approx(0.8)
    assert {(p.first, p.second) for p in health["conciseness"].separated} >= {("base", "dpo"), ("kto", "orpo")}
    assert health["conciseness"].message().startswith("conciseness: ok, 0.200 (base) to 1.000 (dpo)")


def test_references_that_differ_within_their_intervals_are_a_warning_not_ok():
    """One item of 20 apart (0.25 vs 0.30): not constant, but no pair differs beyond its interval."""
    per_model = {"base": {"factuality": _per_item(0.25)}, "dpo": {"factuality": _per_item(0.30)}}
    (health,) = objective_health(per_model, ["factuality"])
    assert not health.constant and not health.separated and not health.ok
    assert "no two differ beyond their 95 % interval" in health.message()


def test_intervals_are_the_bootstrap_of_the_reported_mean():
    per_item = {"safety": _per_item(0.75), "factuality": _per_item(0.5)}
    out = intervals(per_item, ["safety", "factuality"], prefix="holdout.")
    ci = bootstrap_mean([1.0] * 15 + [0.0] * 5)
    assert (out["holdout.safety_low"], out["holdout.safety_high"]) == (ci.low, ci.high)
    assert out["holdout.factuality_low"] <= 0.5 <= out["holdout.factuality_high"]


def test_tables_never_cut_names_and_show_intervals():
    long_method = "breadcrumbs_ties_with_a_really_long_name"
    rows = [{"trial_number": 7, "method": long_method, "false_rejection": 0.75, "false_rejection_low": 0.55,
             "false_rejection_high": 0.9, "holdout.false_rejection": 0.5, "holdout.false_rejection_low": 0.25,
             "holdout.false_rejection_high": 0.75}]
    refs = {"orpo": {"false_rejection": 1.0, "false_rejection_low": 1.0, "false_rejection_high": 1.0}}
    text = front_table(rows, [0], refs, ["false_rejection"], "front", {0: ["orpo"]})
    lines = text.splitlines()
    assert long_method in text and "false_rejection" in lines[1]
    assert "0.750 [0.55, 0.90]" in text and "0.500 [0.25, 0.75]" in text
    held = next(line for line in lines if "held-out" in line)
    search = next(line for line in lines if line.startswith("7 "))
    # the held-out line sits under the trial's search line, in the same columns
    assert held.index("0.500") == search.index("0.750")
    assert "orpo" in search
    # plain text: widths from content, so nothing depends on the terminal
    assert format_table(["a"], [["x" * 300]]).splitlines()[2] == "x" * 300


def _ctx(held_items: list[dict]) -> Context:
    return Context(prompts=[], items=[], objectives=["safety", "conciseness"], sources=["a", "b"], references={},
                   generation={}, queue=None, workers=[], judges=[], namespace="t", retries=0,
                   holdout_prompts=[[{"role": "user", "content": i["prompt"]}] for i in held_items],
                   holdout_items=held_items)


def test_validate_front_answers_the_held_out_items_for_front_trials_only(tmp_path):
    held = [{"id": f"h{i}", "prompt": f"p{i}", "gold": "g", "category": "safe"} for i in range(4)]
    plans = tmp_path / "plans"
    plans.mkdir()
    for n in range(3):
        (plans / f"trial_{n:04d}.yaml").write_text(yaml.safe_dump({"merge_method": "linear", "n": n}))
    rows = [{"trial_number": n, "status": "ok"} for n in range(3)]
    rows[2] |= {"holdout.safety": 1.0, "holdout.conciseness": 1.0}  # validated before a resume
    seen = []

    def evaluate(ctx: Context, plan: dict) -> dict:
        seen.append((plan["n"], [i["id"] for i in ctx.items]))
        if plan["n"] == 1:
            return {"status": "failed", "error": "worker lost"}
        per_item = {"safety": {"h0": 1.0, "h1": 1.0, "h2": 0.0, "h3": 1.0}, "conciseness": _per_item(0.5, ["h0", "h1", "h2", "h3"])}
        return {"status": "ok", "safety": 0.75, "conciseness": 0.5, "items_json": json.dumps(per_item)}

    saves = []
    assert validate_front(_ctx(held), tmp_path, rows, [0, 1, 2], evaluate,
                          saved=lambda: saves.append(rows[0].get("holdout_status"))) == 2
    assert saves == ["ok", "ok"]  # the files are rewritten after each trial, the failed one too
    assert seen == [(0, ["h0", "h1", "h2", "h3"]), (1, ["h0", "h1", "h2", "h3"])]
    assert rows[0]["holdout.safety"] == 0.75 and rows[0]["holdout_items"] == 4 and rows[0]["holdout_status"] == "ok"
    assert rows[0]["holdout.safety_low"] <= 0.75 <= rows[0]["holdout.safety_high"]
    assert rows[1]["holdout_status"] == "failed" and "worker lost" in rows[1]["holdout_error"]
    assert (tmp_path / "items" / "holdout_trial_0000.parquet").exists()
    # a second pass (a resumed run) validates nothing again: done and failed rows are kept
    assert validate_front(_ctx(held), tmp_path, rows, [0, 1, 2], evaluate) == 0


def _experiment(tmp_path: Path) -> Path:
    """Two front trials: A leads on the search items, B on the held-out ones."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text(yaml.safe_dump({"models": {"example": True},
                                                     "search": {"objectives": ["safety", "conciseness"]}}))
    search_a, search_b = {"safety": 0.9, "conciseness": 0.9}, {"safety": 0.8, "conciseness": 0.8}
    rows = [{"trial_number": 0, "method": "ties", "status": "ok", **search_a,
             "holdout.safety": 0.5, "holdout.conciseness": 0.5},
            {"trial_number": 1, "method": "linear", "status": "ok", **search_b,
             "holdout.safety": 0.95, "holdout.conciseness": 0.95}]
    # B is dominated on the search items, so only A is on the front unless both are: make them trade off
    rows[1]["safety"] = 0.95
    pd.DataFrame(rows).to_parquet(exp / "trials.parquet")
    refs = [{"model": "base", "safety": 0.5, "conciseness": 0.5, "holdout.safety": 0.5, "holdout.conciseness": 0.5},
            {"model": "a", "safety": 0.6, "conciseness": 0.9, "holdout.safety": 0.6, "holdout.conciseness": 0.9},
            {"model": "b", "safety": 0.9, "conciseness": 0.4, "holdout.safety": 0.85, "holdout.conciseness": 0.4}]
    pd.DataFrame(refs).to_csv(exp / "references.csv", index=False)
    held = [f"h{i}" for i in range(20)]
    write_items(exp, "holdout_trial_0001", {"safety": _per_item(0.95, held), "conciseness": _per_item(0.95, held)})
    write_items(exp, "holdout_ref_b", {"safety": _per_item(0.85, held), "conciseness": _per_item(0.4, held)})
    write_items(exp, "holdout_ref_a", {"safety": _per_item(0.6, held), "conciseness": _per_item(0.9, held)})
    return exp


def test_export_picks_on_held_out_scores_and_says_when_a_lead_is_inside_its_interval(tmp_path):
    exp = _experiment(tmp_path)
    row, _, references, on = choose(exp)
    assert (on, row["trial_number"]) == ("held-out", 1)
    row_search, _, _, on_search = choose(exp, on="search")
    assert (on_search, row_search["trial_number"]) == ("search", 0)
    leads = leads_over_sources(exp, row, references, ["safety", "conciseness"], ["a", "b"], held_out=True)
    safety, conciseness = leads
    # safety: 0.95 vs b's 0.85 on 20 items, two items apart: inside the interval
    assert safety.startswith("safety: pick − b (best source) = +0.100") and "INSIDE" in safety
    assert conciseness.startswith("conciseness: pick − a (best source) = +0.050") and "INSIDE" in conciseness


def test_export_falls_back_to_search_scores_when_the_front_was_not_validated(tmp_path):
    exp = _experiment(tmp_path)
    frame = pd.read_parquet(exp / "trials.parquet")
    frame["holdout.safety"] = math.nan
    frame.to_parquet(exp / "trials.parquet")
    row, _, _, on = choose(exp)
    assert on == "search"
