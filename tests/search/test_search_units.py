"""Search building blocks with exact answers: fronts, hypervolume, constraints, config, space."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from merging import parse_plan
from search.config import SearchConfigError, parse_search_config
from search.constraints import feasible, parse_constraint
from search.pareto import dominates, hypervolume, knee, non_dominated, weighted_pick
from search.space import grid_points, suggest_plan

SOURCES = ["dpo", "kto", "orpo"]


def test_front_excludes_dominated_and_nan_points():
    points = [(0.5, 0.5), (0.6, 0.4), (0.4, 0.4), (0.6, 0.5), (math.nan, 1.0), (0.2, 0.9)]
    assert non_dominated(points) == [3, 5]
    assert dominates((1, 1), (1, 0)) and not dominates((1, 1), (1, 1))


def test_references_that_beat_a_front_trial_are_named():
    from search.results import dominating_references

    refs = {"base": {"wtr.safety": 0.5, "wtr.factuality": 0.5}, "orpo": {"wtr.safety": 0.9, "wtr.factuality": 0.6},
            "dpo": {"wtr.safety": 0.9, "wtr.factuality": 0.4}}
    objectives = ["safety", "factuality"]
    assert dominating_references({"safety": 0.9, "factuality": 0.5}, refs, objectives) == ["orpo"]
    assert dominating_references({"safety": 0.9, "factuality": 0.6}, refs, objectives) == []  # equal is not beaten
    assert dominating_references({"safety": 0.4, "factuality": 0.4}, refs, objectives) == ["base", "orpo", "dpo"]


def test_hypervolume_matches_hand_computed_areas_and_volumes():
    assert hypervolume([(1.0, 1.0)], (0.0, 0.0)) == 1.0
    # Two rectangles 0.6x0.5 and 0.2x0.9 overlapping in 0.2x0.5: 0.30 + 0.18 - 0.10
    assert hypervolume([(0.6, 0.5), (0.2, 0.9)], (0.0, 0.0)) == pytest.approx(0.38)
    # 3-D: boxes 1x1x0.5 and 0.5x0.5x1 overlap in 0.5x0.5x0.5
    assert hypervolume([(1, 1, 0.5), (0.5, 0.5, 1)], (0, 0, 0)) == pytest.approx(0.5 + 0.25 - 0.125)
    assert hypervolume([(0.5, 0.5)], (0.6, 0.0)) == 0.0  # not beyond the reference point


def test_knee_and_weighted_pick():
    points = [(1.0, 0.0), (0.7, 0.7), (0.0, 1.0)]
    assert knee(points) == 1
    assert weighted_pick(points, (3.0, 1.0)) == 0


def test_constraints_against_reference_models():
    refs = {"base": {"wtr.safety": 0.9}, "dpo": {"wtr.safety": 0.7}, "kto": {"wtr.safety": 0.8}}
    best = parse_constraint("safety>=best_source", ["base", "dpo", "kto"])
    assert best.threshold(refs) == 0.8
    assert feasible({"wtr.safety": 0.8}, [best], refs) and not feasible({"wtr.safety": 0.79}, [best], refs)
    assert not feasible({"wtr.safety": math.nan}, [best], refs)
    assert parse_constraint("factuality >= 0.5").threshold(refs) == 0.5
    with pytest.raises(ValueError, match="unknown dimension 'safty'"):
        parse_constraint("safty>=0.5")
    with pytest.raises(ValueError, match="bound must be a number"):
        parse_constraint("safety>=bestsource")


def test_constraints_name_objectives_and_tell_optuna_how_far_they_are():
    """Plain objective names first (answer metrics are objectives, not judge dimensions),
    then wtr.<dim>; the violation is ≤ 0 exactly when the constraint holds."""
    refs = {"base": {"wtr.safety": 0.9, "brevity": 0.2}, "dpo": {"wtr.safety": 0.7, "brevity": 0.5},
            "kto": {"wtr.safety": 0.8, "brevity": 0.4}}
    brevity = parse_constraint("brevity>=best_source", ["base", "dpo", "kto"], objectives=["safety", "brevity"])
    assert brevity.threshold(refs) == 0.5
    assert brevity.violation({"brevity": 0.45}, refs) == pytest.approx(0.05) and not brevity.holds({"brevity": 0.45}, refs)
    assert brevity.violation({"brevity": 0.5}, refs) == 0.0 and brevity.holds({"brevity": 0.5}, refs)
    safety = parse_constraint("safety<=base", ["base"])
    assert safety.violation({"safety": 0.8, "wtr.safety": 0.1}, refs) == pytest.approx(-0.1)  # plain name first
    assert safety.violation({"wtr.safety": 0.95}, refs) == pytest.approx(0.05)
    assert safety.violation({"wtr.safety": math.nan}, refs) == 1.0  # unknown: violated, never NaN (Optuna refuses it)
    with pytest.raises(ValueError, match="unknown dimension 'brevity'.*objective or a judge dimension"):
        parse_constraint("brevity>=0.5", objectives=["safety"])


def test_config_error_message_is_field_colon_message():
    with pytest.raises(SearchConfigError) as info:
        parse_search_config({"models": {"example": True}, "space": {"methods": ["tie"]}}, "cfg.yaml")
    lines = str(info.value).splitlines()
    assert lines[0] == "cfg.yaml: invalid config"
    assert lines[1].startswith("  space.methods: unknown merge method(s) ['tie']; known: ")
    assert "Value error" not in str(info.value)


def test_config_errors_name_the_field():
    with pytest.raises(SearchConfigError, match=r"space\.methods.*unknown merge method\(s\) \['tiez'\]"):
        parse_search_config({"models": {"example": True}, "space": {"methods": ["tiez"]}})
    with pytest.raises(SearchConfigError, match=r"search\.objectives.*unknown objective"):
        parse_search_config({"models": {"example": True}, "search": {"objectives": ["helpfulness"]}})
    with pytest.raises(SearchConfigError, match=r"models.*at least 2 fine-tuned models"):
        parse_search_config({"models": {"base": "b", "sources": {"dpo": "d"}}})
    with pytest.raises(SearchConfigError, match=r"space\.density.*low \(0\.9\) must be ≤ high"):
        parse_search_config({"models": {"example": True}, "space": {"density": {"low": 0.9, "high": 0.1}}})
    with pytest.raises(SearchConfigError, match=r"grid sweeps λ only.*\['ties'\]"):
        parse_search_config({"models": {"example": True}, "search": {"sampler": "grid"},
                             "space": {"methods": ["linear", "ties"]}})
    with pytest.raises(SearchConfigError, match=r"workers\.count"):
        parse_search_config({"models": {"example": True}, "workers": {"count": 0}})
    with pytest.raises(SearchConfigError, match=r"gpu_memory_utilization \(0\.85\) must be ≤ workers\.gpus \(0\.5\)"):
        parse_search_config({"models": {"example": True}, "workers": {"count": 2, "gpus": 0.5}})
    shared = parse_search_config({"models": {"example": True}, "workers": {"count": 2, "gpus": 0.5},
                                  "serving": {"engine": {"gpu_memory_utilization": 0.45}}})
    assert shared.serving.engine.gpu_memory_utilization == 0.45


def test_objectives_may_be_dimensions_builtin_metrics_or_user_functions(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))  # as from the repository root
    objectives = ["safety", "contains_answer", "tests.objective_fns:mentions_prompt_word"]
    config = parse_search_config({"models": {"example": True}, "search": {"objectives": objectives}})
    assert config.search.objectives == objectives
    for bad, reason in [("tests.objective_fns:one_argument", r"must take two positional arguments"),
                        ("tests.no_such_module:fn", r"cannot import module 'tests\.no_such_module'"),
                        ("exact_mtach", r"unknown objective\(s\) \['exact_mtach'\].*built-in metric "
                                        r"\(exact_match, contains_answer")]:
        with pytest.raises(SearchConfigError, match=rf"search\.objectives: .*{reason}"):
            parse_search_config({"models": {"example": True}, "search": {"objectives": ["safety", bad]}})


def test_eval_holdout_is_a_fraction_up_to_a_half():
    assert parse_search_config({"models": {"example": True}}).eval.holdout == 0.25
    assert parse_search_config({"models": {"example": True}, "eval": {"holdout": 0}}).eval.holdout == 0
    with pytest.raises(SearchConfigError, match=r"eval\.holdout"):
        parse_search_config({"models": {"example": True}, "eval": {"holdout": 0.6}})


def test_space_turns_fixed_parameters_into_the_exact_plan():
    space = parse_search_config({"models": {"example": True},
                                 "space": {"layer_curve": {"knots": 2}, "module_multipliers": {"modules": ["attn"]}}}
                                ).space
    trial = optuna.trial.FixedTrial({"method": "ties", "w.dpo": 0.2, "w.kto": 0.2, "w.orpo": 0.6,
                                     "curve.0": 0.5, "curve.1": 1.5, "module.attn": 1.5, "scale": 1.2,
                                     "density": 0.4})
    plan = suggest_plan(trial, space, SOURCES, "base", n_layers=30)
    assert plan["merge_method"] == "ties" and plan["base_model"] == "base"
    # TIES divides by the sum of the weights: the curve and the multiplier scale λ, not the weights
    assert plan["parameters"] == {"lambda": [{"filter": "attn", "value": [0.9, 2.7]}, {"value": [0.6, 1.8]}]}
    dpo = plan["models"][0]["parameters"]
    assert dpo == {"weight": 0.2, "density": 0.4}
    assert plan["models"][2]["parameters"]["weight"] == 0.6
    assert "seed" not in plan
    parse_plan(plan)  # a valid mergekit-schema plan


def test_randomised_methods_get_the_configured_merge_seed():
    space = parse_search_config({"models": {"example": True}}).space
    trial = optuna.trial.FixedTrial({"method": "dare_ties", "w.dpo": 0.2, "w.kto": 0.2, "w.orpo": 0.6,
                                     "scale": 1.0, "density": 0.4})
    assert suggest_plan(trial, space, SOURCES, "base", n_layers=30, merge_seed=11)["seed"] == 11
    settings = parse_search_config({"models": {"example": True}, "search": {"merge_seed": 5}}).search
    assert settings.merge_seed == 5 and settings.population is None


def test_slerp_uses_a_pair_and_lambda_as_t():
    space = parse_search_config({"models": {"example": True}, "space": {"methods": ["slerp"]}}).space
    plan = suggest_plan(optuna.trial.FixedTrial({"method": "slerp", "pair": "kto+orpo", "lambda": 0.25}),
                        space, SOURCES, "base", n_layers=30)
    assert plan == {"merge_method": "slerp", "base_model": "kto", "models": [{"model": "orpo"}],
                    "parameters": {"t": 0.25}, "dtype": "bfloat16"}


def test_every_method_yields_valid_plans_from_random_trials():
    config = parse_search_config({"models": {"example": True}, "space": {
        "methods": ["linear", "slerp", "alignment_slerp", "nuslerp", "multislerp", "task_arithmetic", "ties",
                    "dare_linear", "dare_ties", "della", "della_linear", "breadcrumbs", "breadcrumbs_ties",
                    "model_stock", "karcher", "tsvm", "r_tsvm"],
        "layer_curve": {"knots": 3}, "module_multipliers": {}}})
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(120):
        trial = study.ask()
        plan = suggest_plan(trial, config.space, SOURCES, "base", n_layers=30)
        parse_plan(plan, f"trial {trial.number}")
        seen.add(plan["merge_method"])
        study.tell(trial, 0.0)
    assert len(seen) == 17


def test_grid_is_methods_times_pairs_times_lambdas():
    space = parse_search_config({"models": {"example": True}, "search": {"sampler": "grid"},
                                 "space": {"methods": ["linear", "alignment_slerp"]}}).space
    points = grid_points(space, SOURCES)
    assert len(points) == 2 * 3 * 3
    assert {"method": "linear", "lambda": 0.5, "pair": "dpo+kto"} in points


def test_resume_completes_a_running_trial_whose_row_reached_disk_and_fails_the_rest(tmp_path):
    """The driver can die after writing a trial's row but before telling Optuna: the study
    must then hold that trial as COMPLETE with the row's values, not FAIL (files and study
    would disagree); a running trial with no row, or a failed row, is FAIL."""
    import pandas as pd

    from search import recover_rows

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "maximize"])
    done = study.ask()
    study.tell(done, [0.1, 0.2])
    written, lost, failed = study.ask(), study.ask(), study.ask()  # all RUNNING when the driver died
    rows = [{"trial_number": done.number, "status": "ok", "safety": 0.1, "factuality": 0.2},
            {"trial_number": written.number, "status": "ok", "safety": 0.7, "factuality": 0.4},
            {"trial_number": failed.number, "status": "failed", "safety": math.nan, "factuality": math.nan}]
    pd.DataFrame(rows).to_parquet(tmp_path / "trials.parquet", index=False)

    recovered = recover_rows(tmp_path, storage, "s", ["safety", "factuality"])

    assert sorted(r["trial_number"] for r in recovered) == [done.number, written.number, failed.number]
    trials = {t.number: t for t in optuna.load_study(study_name="s", storage=storage).trials}
    state = optuna.trial.TrialState
    assert trials[written.number].state == state.COMPLETE and trials[written.number].values == [0.7, 0.4]
    assert trials[lost.number].state == state.FAIL and trials[failed.number].state == state.FAIL
    assert trials[done.number].values == [0.1, 0.2]


def test_trials_run_ahead_of_the_workers_only_where_judging_takes_time():
    from search.driver import concurrent_trials

    api_judge = {"judge": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": None}}
    rubric = parse_search_config({"models": {"example": True}, "workers": {"count": 3}})
    assert concurrent_trials(rubric) == 3  # the rubric judge answers in milliseconds
    api = parse_search_config({"models": {"example": True}, "workers": {"count": 3, "judges": 2}, "judging": api_judge})
    assert concurrent_trials(api) == 5  # one trial judging per judge actor while the workers go on
    fixed = parse_search_config({"models": {"example": True}, "workers": {"count": 3, "trials_ahead": 4},
                                 "judging": api_judge})
    assert concurrent_trials(fixed) == 7
    with pytest.raises(SearchConfigError, match="workers.trials_ahead"):
        parse_search_config({"models": {"example": True}, "workers": {"trials_ahead": -1}})
