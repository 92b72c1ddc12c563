"""The search end to end on a real local Ray cluster with the small model.

Two seeded perturbations of SmolLM2-135M as sources, the rubric judge, a few trials:
the experiment folder must hold every promised file, the front must really be
non-dominated, the Optuna study must hold every trial (with named objectives and
labelled trials), the MLflow tracker a run per trial, and a failing plan must be
recorded with its reason while the search goes on.
"""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
import pytest
import ray
import yaml

from merging import parse_plan
from search.config import parse_search_config
from search import run_search
from search.pareto import dominates

pytestmark = pytest.mark.slow
OBJECTIVES = ["safety", "factuality", "conciseness", "proactivity"]


@pytest.fixture(scope="module")
def short_search(smollm_family, tmp_path_factory):
    """One short search shared by the tests below (files and front, tracker, Optuna study):
    its experiment folder. MLflow is on (`experiment.trackers`) with its default store."""
    tmp_path = tmp_path_factory.mktemp("e2e")
    config = parse_search_config({
        "experiment": {"name": "e2e", "dir": str(tmp_path), "trackers": ["mlflow"]},
        "models": {"base": str(smollm_family["base"]), "sources": {"a": str(smollm_family["a"]),
                                                                   "b": str(smollm_family["b"])}},
        "space": {"methods": ["linear", "ties", "alignment_slerp"], "layer_curve": {"knots": 2}},
        "search": {"sampler": "tpe", "n_trials": 5, "seed": 3, "objectives": OBJECTIVES},
        "workers": {"count": 1, "cpus": 2},
        "serving": {"backend": "transformers", "generation": {"max_tokens": 24, "batch_size": 12}},
        "eval": {"set": "soupsearch-eval-v1", "subset": 24, "holdout": 0.34},  # 16 search + 8 held-out items
    })
    try:
        return run_search(config)
    finally:
        ray.shutdown()  # the other tests start Ray sized for their own configs


def test_short_search_writes_results_and_a_true_front(short_search, smollm_family, tmp_path):
    exp = short_search
    split = pd.read_csv(exp / "eval_split.csv")
    assert split.part.value_counts().to_dict() == {"search": 16, "holdout": 8}
    assert set(split[split.part == "holdout"].category) == {"safe", "unsafe"}

    trials = pd.read_parquet(exp / "trials.parquet")
    assert len(trials) == 5 and sorted(trials.trial_number) == list(range(5))
    assert set(trials.method) <= {"linear", "ties", "alignment_slerp"}
    assert (pd.read_csv(exp / "trials.csv").shape[0]) == 5
    ok = trials[trials.status == "ok"]
    assert len(ok) == 5, trials[["method", "error"]]
    for col in [*OBJECTIVES, "wtr.false_rejection", "meandiff.safety", "merge_s", "swap_s", "generate_s", "judge_s"]:
        assert ok[col].notna().all(), col

    refs = pd.read_csv(exp / "references.csv")
    assert list(refs.model) == ["base", "a", "b"]
    # mean-diff is the trial's WTR minus the mean of the sources' WTRs
    src_mean = refs[refs.model != "base"]["wtr.safety"].mean()
    assert ok["meandiff.safety"].tolist() == pytest.approx((ok["wtr.safety"] - src_mean).tolist())

    pareto = pd.read_csv(exp / "pareto.csv")
    assert 1 <= len(pareto) <= len(ok)
    # every front trial and every reference was validated on the 8 held-out items, with intervals
    for frame in (pareto, refs):
        for o in OBJECTIVES:
            assert frame[f"holdout.{o}"].notna().all(), o
            assert (frame[f"holdout.{o}_low"] <= frame[f"holdout.{o}"]).all()
            assert (frame[f"holdout.{o}"] <= frame[f"holdout.{o}_high"]).all()
            assert (frame[f"{o}_low"] <= frame[o]).all() and (frame[o] <= frame[f"{o}_high"]).all()
    assert (pareto.holdout_items == 8).all()
    report = (exp / "REPORT.md").read_text()
    assert all(f"- {o}: " in report for o in OBJECTIVES) and "held-out" in report
    points = ok[OBJECTIVES].to_numpy().tolist()
    front = pareto[OBJECTIVES].to_numpy().tolist()
    for p in front:
        assert not any(dominates(q, p) for q in points)
    for number in set(ok.trial_number) - set(pareto.trial_number):
        row = ok[ok.trial_number == number][OBJECTIVES].to_numpy().tolist()[0]
        assert any(dominates(q, row) or q == row for q in front)

    hv = pd.read_csv(exp / "hypervolume.csv")
    assert len(hv) == 5 and (hv.hypervolume.diff().dropna() >= -1e-12).all()
    assert "plotly" in (exp / "pareto.html").read_text()[:5000].lower()
    for number in range(5):
        parse_plan(yaml.safe_load((exp / "plans" / f"trial_{number:04d}.yaml").read_text()))

    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert len(study.trials) == 5
    assert sorted(t.number for t in study.best_trials) == sorted(pareto.trial_number)  # same front as ours
    assert all(not math.isnan(v) for t in study.best_trials for v in t.values)

    # export the knee of the front: our config, a mergekit config mergekit accepts, a loadable model
    from mergekit.config import MergeConfiguration

    from search.export import export
    from serving import GenerationSettings, ModelSet, create_backend

    result = export(exp, require=["safety>=0"], materialize=tmp_path / "shipped")
    assert result.trial_number in set(pareto.trial_number)
    assert result.picked_on == "held-out" and len(result.leads) == len(OBJECTIVES)
    picked_row = pareto[pareto.trial_number == result.trial_number].iloc[0]
    assert result.scores == {o: round(float(picked_row[f"holdout.{o}"]), 4) for o in OBJECTIVES}
    search_point = [float(picked_row[o]) for o in OBJECTIVES]
    assert result.beaten_by == [r["model"] for r in refs.to_dict("records")
                                if dominates([r[f"wtr.{o}"] for o in OBJECTIVES], search_point)]
    shipped = yaml.safe_load(result.plan_path.read_text())
    assert shipped["base_model"] == str(smollm_family["base"])
    if result.mergekit_path is not None:
        MergeConfiguration.model_validate(yaml.safe_load(result.mergekit_path.read_text()))
    assert (result.model_dir / "model.safetensors").exists() or (result.model_dir / "model.safetensors.index.json").exists()
    with create_backend("transformers", ModelSet({"base": result.model_dir}, base="base")) as engine:
        answer = engine.generate([[{"role": "user", "content": "What is the capital of France?"}]],
                                 GenerationSettings(max_tokens=12))[0]
    assert answer.strip()


INTERVALS = [f"{o}_{end}" for o in OBJECTIVES for end in ("low", "high")]


def test_every_trial_is_an_mlflow_run_with_its_objectives_intervals_and_timings(short_search):
    """`experiment.trackers: [mlflow]` with the default store: the SQLite file in the experiment
    folder holds one run per trial, named like its plan, whose metrics are the row's numbers."""
    from mlflow import MlflowClient

    trials = pd.read_parquet(short_search / "trials.parquet")
    client = MlflowClient(tracking_uri=f"sqlite:///{short_search / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.artifact_location.endswith(str(short_search / "mlartifacts"))
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == [f"trial_{n:04d}" for n in sorted(trials.trial_number)]
    for row in trials.to_dict("records"):
        run = runs[f"trial_{row['trial_number']:04d}"]
        assert run.info.status == "FINISHED" and run.data.tags["status"] == row["status"] == "ok"
        sampled = json.loads(row["params"])
        assert run.data.params == {k: str(v) for k, v in sampled.items()} | {"trial_number": str(row["trial_number"])}
        assert run.data.params["method"] == row["method"]
        for key in [*OBJECTIVES, *INTERVALS, "wtr.false_rejection", "meandiff.safety", "judged_ok",
                    "merge_s", "swap_s", "generate_s", "judge_s", "trial_s"]:
            assert run.data.metrics[key] == row[key], key
        assert not any(k.startswith("config") for k in run.data.metrics)


def test_the_optuna_study_names_its_objectives_and_labels_trials_and_the_held_out_front(short_search):
    """What optuna-dashboard shows without the CSV: objective names, each trial's method, status,
    intervals and time, and each validated front trial's held-out scores on the study."""
    trials = pd.read_parquet(short_search / "trials.parquet").set_index("trial_number")
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{short_search / 'optuna.db'}")
    assert study.metric_names == OBJECTIVES
    for t in study.trials:
        row = trials.loc[t.number]
        assert t.user_attrs == {"method": row["method"], "status": "ok", "trial_s": row["trial_s"],
                                **{k: row[k] for k in INTERVALS}}
    validated = trials[trials["holdout.safety"].notna()]
    assert len(validated) >= 1
    assert study.user_attrs == {
        f"holdout.trial_{n:04d}": {**{o: row[f"holdout.{o}"] for o in OBJECTIVES},
                                   **{k: row[f"holdout.{k}"] for k in INTERVALS}, "items": 8}
        for n, row in validated.iterrows()}


def test_resume_after_killing_the_driver_keeps_finished_trials(smollm_family, tmp_path):
    """SIGKILL the driver once two trials are on disk; --resume completes the search with
    those trials unchanged and none of them run again."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = {
        "experiment": {"name": "resume", "dir": str(tmp_path)},
        "models": {"base": str(smollm_family["base"]), "sources": {"a": str(smollm_family["a"]),
                                                                   "b": str(smollm_family["b"])}},
        "space": {"methods": ["linear", "task_arithmetic"]},
        "search": {"sampler": "random", "n_trials": 5, "seed": 1},
        "serving": {"backend": "transformers", "generation": {"max_tokens": 16, "batch_size": 8}},
        "eval": {"set": "smoke", "holdout": 0},  # 8 items: too few to hold any out
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    exp = tmp_path / "resume"
    cmd = [sys.executable, str(root / "run_search.py"), "--config", str(path)]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline:
            if (exp / "trials.parquet").exists() and len(pd.read_parquet(exp / "trials.parquet")) >= 2:
                break
            assert proc.poll() is None, "the search ended before it could be killed"
            time.sleep(0.5)
        else:
            pytest.fail("no two finished trials within 400 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    before = pd.read_parquet(exp / "trials.parquet")
    assert 2 <= len(before) < 5

    done = subprocess.run([sys.executable, str(root / "run_search.py"), "--resume", str(exp)], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming: " in done.stdout
    after = pd.read_parquet(exp / "trials.parquet")
    assert len(after) == 5 and after.trial_number.is_unique
    kept = after[after.trial_number.isin(before.trial_number)].sort_values("trial_number").reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[before.columns], before.sort_values("trial_number").reset_index(drop=True))
    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{exp / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.number for t in complete) == sorted(after.trial_number)


def test_judge_answering_garbage_fails_trials_with_the_reason_and_the_search_completes(smollm_family, tmp_path,
                                                                                       ray_cleanup):
    """The judge answers (so preflight passes) but never with a readable verdict. A judge that
    does not answer at all is stopped by preflight instead (tests/search/test_preflight.py)."""
    from judge_server import JudgeServer

    with JudgeServer() as judge:
        config = parse_search_config({
            "experiment": {"name": "nojudge", "dir": str(tmp_path)},
            "models": {"base": str(smollm_family["base"]), "sources": {"a": str(smollm_family["a"]),
                                                                       "b": str(smollm_family["b"])}},
            "space": {"methods": ["linear"]},
            "search": {"sampler": "random", "n_trials": 2},
            "serving": {"backend": "transformers", "generation": {"max_tokens": 8}},
            "judging": {"judge": {"backend": "openai", "base_url": judge.url, "model": "garbage",
                                  "api_key_env": None, "max_retries": 1, "backoff_s": 0.01, "timeout_s": 5}},
            "eval": {"set": "smoke", "holdout": 0},  # 8 items: too few to hold any out
        })
        exp = run_search(config)
    trials = pd.read_parquet(exp / "trials.parquet")
    assert len(trials) == 2 and (trials.status == "failed").all()
    assert trials.error.str.contains("no verdict could be scored").all()
    assert (trials.judge_unparseable == 8).all()  # every item counted as unreadable, none scored
    pareto = pd.read_csv(exp / "pareto.csv")
    assert len(pareto) == 0 and "trial_number" in pareto.columns
    study = optuna.load_study(study_name="nojudge", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2


def test_greedy_soup_strategy_runs_through_the_same_workers_judge_and_files(smollm_family, tmp_path, ray_cleanup):
    """Greedy soup starts from the best source (a reference, not re-run) and evaluates
    the uniform average of it and the other source as one row; the file layout is the
    search's own, and a resume reads the soup back instead of evaluating it again."""
    data = {
        "experiment": {"name": "soup", "dir": str(tmp_path)},
        "models": {"base": str(smollm_family["base"]), "sources": {"a": str(smollm_family["a"]),
                                                                   "b": str(smollm_family["b"])}},
        "search": {"strategy": "greedy_soup", "objectives": OBJECTIVES},
        "serving": {"backend": "transformers", "generation": {"max_tokens": 8}},
        "eval": {"set": "smoke", "holdout": 0},  # 8 items: too few to hold any out
    }
    exp = run_search(parse_search_config(data))
    trials = pd.read_parquet(exp / "trials.parquet")
    assert len(trials) == 1 and trials.status.tolist() == ["ok"], trials[["status", "error"]]
    plan = yaml.safe_load((exp / "plans" / "trial_0000.yaml").read_text())
    assert plan["merge_method"] == "linear"
    assert sorted(m["model"] for m in plan["models"]) == ["a", "b"]
    assert len({m["parameters"]["weight"] for m in plan["models"]}) == 1  # equal weights,
    assert plan.get("parameters", {}).get("normalize", True)              # normalised: the uniform average
    assert list(pd.read_csv(exp / "references.csv").model) == ["base", "a", "b"]
    assert (exp / "pareto.csv").exists() and (exp / "pareto.html").exists()

    ray.shutdown()
    run_search(parse_search_config(data), exp, resume=True)
    again = pd.read_parquet(exp / "trials.parquet")
    pd.testing.assert_frame_equal(again, trials)  # read back, not evaluated a second time
