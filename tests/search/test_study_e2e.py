"""Both studies end to end on the (short-trained) example family, rubric judge, 4 eval items.

The tables must have the promised shape and agree with the per-trial rows they are
computed from; a LERP merge at λ = 0 / 1 is its source exactly, so it must score exactly
the source's WTR (the endpoints of the λ sweep).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from search.config import DIMENSIONS, parse_search_config
from search.studies import run_methods_study, run_soups_study

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _config(family: dict[str, Path], tmp_path: Path, name: str, **extra) -> dict:
    return {
        "experiment": {"name": name, "dir": str(tmp_path)},
        "models": {"base": str(family["base"]), "sources": {k: str(v) for k, v in family.items() if k != "base"}},
        "workers": {"count": 1, "cpus": 2},
        "serving": {"backend": "transformers", "generation": {"max_tokens": 8, "batch_size": 4}},
        "eval": {"set": "smoke", "subset": 4, "holdout": 0},
        **extra,
    }


def test_soups_study_tables_endpoints_and_report(example_models, tmp_path, ray_cleanup):
    config = parse_search_config(_config(example_models, tmp_path, "soups", study={
        "heterogeneous": [["dpo", "kto"]], "homogeneous": [["dpo", "dpo-s1"]], "lambdas": [0.0, 0.5, 1.0],
        "soup_methods": ["lerp", "slerp_lerp_norms"], "bootstrap": 200}))
    exp = run_soups_study(config)
    out = exp / "study"
    trials = pd.read_parquet(exp / "trials.parquet")
    refs = pd.read_csv(exp / "references.csv").set_index("model")
    assert len(trials) == 2 * 3 + 2 * 1 and (trials.status == "ok").all(), trials[["status", "error"]]
    points = [json.loads(p) for p in trials.params]
    assert {(p["kind"], p["pair"]) for p in points} == {("heterogeneous", "dpo+kto"), ("homogeneous", "dpo+dpo-s1")}

    # λ = 0 is dpo and λ = 1 is kto, exactly: the same WTR on every dimension
    for lam, source in ((0.0, "dpo"), (1.0, "kto")):
        row = trials[[p["soup_method"] == "lerp" and p["lambda"] == lam for p in points]].iloc[0]
        assert [row[f"wtr.{d}"] for d in DIMENSIONS] == pytest.approx(
            [refs.loc[source, f"wtr.{d}"] for d in DIMENSIONS], nan_ok=True)

    table1 = pd.read_csv(out / "table1_meandiff.csv")
    assert len(table1) == 4  # method × kind × pair
    assert set(zip(table1.method, table1.kind)) == {(m, k) for m in ("lerp", "slerp_lerp_norms")
                                                    for k in ("heterogeneous", "homogeneous")}
    assert {*DIMENSIONS, "average"} <= set(table1.columns)
    # each cell is the λ=0.5 merge's WTR minus the mean of its two sources (λ 0 and 1 are the sources)
    for r in table1.to_dict("records"):
        m1, m2 = r["pair"].split("+")
        merge = trials[[p["soup_method"] == r["method"] and p["pair"] == r["pair"] and p["lambda"] == 0.5
                        for p in points]].iloc[0]
        for d in DIMENSIONS:
            expected = merge[f"wtr.{d}"] - 0.5 * (refs.loc[m1, f"wtr.{d}"] + refs.loc[m2, f"wtr.{d}"])
            assert r[d] == pytest.approx(expected, nan_ok=True), (r["method"], r["pair"], d)
            if pd.notna(expected):
                assert r[f"{d}_low"] <= r[d] + 1e-9 and r[d] - 1e-9 <= r[f"{d}_high"]

    wtr = pd.read_csv(out / "wtr.csv")
    assert len(wtr) == len(refs) + len(trials)
    sweep = pd.read_csv(out / "lambda_sweep.csv")
    ends = sweep[(sweep.method == "lerp") & (sweep.pair == "dpo+kto") & (sweep.dimension == "safety")]
    assert ends["lambda"].tolist() == [0.0, 0.5, 1.0]
    assert (out / "lambda_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotly" in (out / "lambda_sweep.html").read_text()[:20000].lower()
    norms = pd.read_csv(out / "alignment_norms.csv")
    assert {"dpo", "kto", "orpo", "dpo-s1"} <= set(norms.model)

    report = (out / "REPORT.md").read_text()
    for needed in ("rubric", "`smoke`", "4 items judged", "bootstrap", "Table 1", "lambda_sweep.png"):
        assert needed in report, needed


def test_methods_study_league_agrees_with_the_trials(example_models, tmp_path, ray_cleanup):
    family = {k: example_models[k] for k in ("base", "dpo", "kto", "orpo")}
    data = _config(family, tmp_path, "league", study={"methods": ["linear", "task_arithmetic", "ties"],
                                                       "search_budget": 2, "bootstrap": 200},
                   search={"objectives": ["safety", "conciseness"], "seed": 1})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run([sys.executable, str(ROOT / "run_search.py"), "study", "methods", "--config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = tmp_path / "league-study-methods"
    trials = pd.read_parquet(exp / "trials.parquet")
    assert len(trials) == 3 + 2
    first = trials.sort_values("trial_number").head(3)
    assert list(first.method) == ["linear", "task_arithmetic", "ties"]  # the defaults run first, in order
    assert json.loads(first.iloc[2].params)["density"] == 0.5

    league = pd.read_csv(exp / "study" / "league.csv")
    assert sorted(league.method) == ["linear", "task_arithmetic", "ties"]
    assert sorted(league["rank"]) == sorted(league["average"].rank(ascending=False, method="min").astype(int))
    front = set(pd.read_csv(exp / "pareto.csv").trial_number)
    for r in league.to_dict("records"):
        best = trials[trials.trial_number == r["best_trial"]].iloc[0]
        assert best.method == r["method"]
        assert r["average"] == pytest.approx(best[[f"wtr.{d}" for d in DIMENSIONS]].astype(float).mean())
        mine = trials[(trials.method == r["method"]) & (trials.status == "ok")]
        assert r["average"] == pytest.approx(mine[[f"wtr.{d}" for d in DIMENSIONS]].astype(float).mean(axis=1).max())
        assert r["on_front"] == bool(set(mine.trial_number) & front)
    report = (exp / "study" / "REPORT.md").read_text()
    assert "league" in report.lower() and "4 items judged" in report
