"""Racing on items end to end: a real local Ray, Tune, the small model and the rubric judge.

To prune deterministically the front the recorder publishes to the racing board gets, once a
real trial is on it, one extra trial that scored above anything a trial can reach on every item
(1.5, where scores are ≤ 1): every later trial is then beaten item by item, whatever the model
answers. What is checked is everything after the decision: the row (pruned, the round reached,
its round-1 scores), Optuna's PRUNED, the front and its files without it.
"""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
import ray

import search.recorder
from search import run_search
from search.config import parse_search_config

pytestmark = pytest.mark.slow
OBJECTIVES = ["safety", "factuality", "conciseness", "proactivity"]


def unreachable(points):
    """A front trial scored 1.5 on every item the real front trial was scored on (scores are ≤ 1)."""
    return -1, {o: dict.fromkeys(items, 1.5) for o, items in points[0][1].items()}


def test_a_pruned_trial_is_recorded_pruned_told_pruned_and_kept_off_the_front(smollm_family, tmp_path, monkeypatch):
    publish = search.recorder.publish_front

    def with_unreachable_point(racing, points):
        publish(racing, points + [unreachable(points)] if points else points)

    monkeypatch.setattr(search.recorder, "publish_front", with_unreachable_point)
    config = parse_search_config({
        "experiment": {"name": "racing", "dir": str(tmp_path)},
        "models": {"base": str(smollm_family["base"]), "sources": {"a": str(smollm_family["a"]),
                                                                   "b": str(smollm_family["b"])}},
        "space": {"methods": ["linear"]},
        "search": {"sampler": "tpe", "n_trials": 3, "seed": 3, "objectives": OBJECTIVES,
                   "racing": {"enabled": True, "first_round": 0.25}},
        "workers": {"count": 1, "cpus": 2},
        "serving": {"backend": "transformers", "generation": {"max_tokens": 16, "batch_size": 12}},
        "eval": {"set": "soupsearch-eval-v1", "subset": 24, "holdout": 0.34},  # 16 search + 8 held-out items
    })
    try:
        exp = run_search(config)
    finally:
        ray.shutdown()

    trials = pd.read_parquet(exp / "trials.parquet").sort_values("trial_number")
    assert trials.status.tolist() == ["ok", "pruned", "pruned"], trials[["status", "error"]]
    first, pruned = trials.iloc[0], trials.iloc[1:]
    assert (first.rounds_done, first.items_judged) == (2, 16)
    assert (pruned.rounds_done == 1).all() and (pruned.pruned_by == -1).all()
    round_one = int(pruned.items_judged.iloc[0])
    assert 3 <= round_one <= 5 and (pruned.items_judged == round_one).all()  # a quarter, per category
    for number in pruned.trial_number:  # its round-1 scores and intervals, from round 1's items only
        items = pd.read_parquet(exp / "items" / f"trial_{number:04d}.parquet")
        assert items[items.dimension == "safety"].item_id.nunique() == round_one
        row = pruned[pruned.trial_number == number].iloc[0]
        for o in OBJECTIVES:
            assert row[f"{o}_low"] <= row[o] <= row[f"{o}_high"]
    assert pd.read_csv(exp / "trials.csv").status.tolist() == ["ok", "pruned", "pruned"]

    assert pd.read_csv(exp / "pareto.csv").trial_number.tolist() == [0]
    assert "2 pruned after round 1" in (exp / "REPORT.md").read_text()
    html = (exp / "pareto.html").read_text()
    assert "trial 0: linear" in html and "trial 1: linear" not in html and "trial 2: linear" not in html
    assert first["holdout.safety"] == first["holdout.safety"]  # the front was validated on the held-out items
    assert pruned.filter(like="holdout.").isna().all().all()  # a pruned trial never is

    study = optuna.load_study(study_name="racing", storage=f"sqlite:///{exp / 'optuna.db'}")
    states = [t.state for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == [optuna.trial.TrialState.COMPLETE] + [optuna.trial.TrialState.PRUNED] * 2
    assert [t.number for t in study.best_trials] == [0]
    assert [t.user_attrs["status"] for t in study.trials] == ["ok", "pruned", "pruned"]
