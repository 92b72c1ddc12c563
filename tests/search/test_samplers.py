"""The project's searcher through real Ray Tune: NSGA-II with its budget-sized population,
the grid visiting each point once, and constraints and labels recorded on the Optuna trials.

The trainable is a formula over the plan (no merge, no model), so a search takes seconds.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
import pytest

from search.config import parse_search_config
from search.constraints import parse_constraint
from search.samplers import (PlanSpace, evolved_parameters, make_sampler, make_searcher, nsga2_population,
                             record_constraints, tpe_startup_trials)
from search.space import grid_points

SOURCES = ["dpo", "kto"]
OBJECTIVES = ["safety", "factuality"]
REFERENCES = {"base": {"wtr.safety": 0.5, "wtr.factuality": 0.5}, "dpo": {"wtr.safety": 0.4, "wtr.factuality": 0.7},
              "kto": {"wtr.safety": 0.6, "wtr.factuality": 0.3}}


def run_tune(config, tmp_path, constraints=()) -> tuple[Any, Any]:
    """`config`'s search on the formula, one trial at a time; returns Tune's results and the study
    (in SQLite as the driver keeps it: Tune pickles the searcher, an in-memory study holds a lock)."""
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def formula_trial(trial_config: dict[str, Any]) -> None:
        """Scores that trade off along the second source's share (nested and self-contained:
        Ray pickles it by value; workers cannot import a test module)."""
        from ray import tune

        plan = trial_config["plan"]
        if plan["merge_method"] == "alignment_slerp":
            share = plan["parameters"]["t"]
        else:
            weights = [m["parameters"]["weight"] for m in plan["models"]]
            share = weights[1] / sum(weights)
        tune.report({"safety": 0.4 + 0.2 * share, "factuality": 0.7 - 0.4 * share * share,
                     "wtr.safety": 0.4 + 0.2 * share, "wtr.factuality": 0.7 - 0.4 * share * share,
                     "method": plan["merge_method"], "status": "ok", "safety_low": 0.25})

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    s = config.search
    space = PlanSpace(config.space, SOURCES, "base", 4, pairwise=s.sampler == "grid", merge_seed=s.merge_seed)
    searcher = make_searcher(OptunaSearch)(space=space, metric=OBJECTIVES, mode=["max", "max"],
                                           sampler=make_sampler(config, SOURCES), constraints=constraints,
                                           references=REFERENCES, study_name="s",
                                           storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}"))
    tuner = tune.Tuner(tune.with_resources(formula_trial, {"cpu": 0.001}),
                       tune_config=tune.TuneConfig(search_alg=searcher, num_samples=s.n_trials, max_concurrent_trials=1),
                       run_config=tune.RunConfig(name="t", storage_path=str(tmp_path), verbose=0))
    return tuner.fit(), searcher._ot_study


def test_population_follows_the_budget():
    assert nsga2_population(24) == 6  # four generations of the default budget, not one random one of 50
    assert nsga2_population(8) == 4 and nsga2_population(2) == 4  # the floor
    assert nsga2_population(1000) == 50  # Optuna's default is the ceiling
    assert nsga2_population(24, 10) == 10
    sampler = make_sampler(parse_search_config({"models": {"example": True}, "search": {"sampler": "nsga2"}}), SOURCES)
    assert isinstance(sampler, optuna.samplers.NSGAIISampler) and sampler._population_size == 6


def test_tpe_starts_modelling_within_a_small_budget():
    assert tpe_startup_trials(10) == 3 and tpe_startup_trials(24) == 8 and tpe_startup_trials(200) == 10
    sampler = make_sampler(parse_search_config({"models": {"example": True}, "search": {"n_trials": 12}}), SOURCES)
    assert isinstance(sampler, optuna.samplers.TPESampler) and sampler._n_startup_trials == 4


def test_nsga2_evolves_only_the_parameters_every_method_has(capsys):
    """Optuna's NSGA-II evolves the intersection of the trials' parameters: over methods
    with different parameters that is the method alone, and the search is told so."""
    several = parse_search_config({"models": {"example": True}, "search": {"sampler": "nsga2"}})
    assert evolved_parameters(several.space, ["dpo", "kto", "orpo"])[0] == ["method"]
    make_sampler(several, ["dpo", "kto", "orpo"])
    assert "samples like random search" in capsys.readouterr().out
    alike = parse_search_config({"models": {"example": True}, "space": {"methods": ["ties", "dare_ties"]}})
    shared, every = evolved_parameters(alike.space, ["dpo", "kto", "orpo"])
    assert len(shared) == every and "density" in shared


def test_nsga2_runs_through_tune_with_the_configured_population(tmp_path, ray_cleanup):
    config = parse_search_config({"models": {"example": True}, "space": {"methods": ["linear", "task_arithmetic"]},
                                  "search": {"sampler": "nsga2", "n_trials": 6, "population": 3}})
    constraints = [parse_constraint("safety>=best_source", ["base", *SOURCES])]
    results, study = run_tune(config, tmp_path, constraints)

    assert results.num_errors == 0 and len(results) == 6
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 6
    generations = Counter(t.system_attrs["NSGAIISampler:generation"] for t in trials)
    assert generations == {0: 3, 1: 3}  # two generations of the configured three
    # every trial carries its violation of safety >= 0.6 (the best source), ≤ 0 when it holds
    for t in trials:
        assert t.constraints == {"safety>=best_source": pytest.approx(0.6 - t.values[0])}
        # and what optuna-dashboard's trial table shows beside the values
        assert t.user_attrs == {"method": t.params["method"], "status": "ok", "safety_low": 0.25}


def test_grid_runs_through_tune_visiting_each_point_once(tmp_path, ray_cleanup):
    config = parse_search_config({"models": {"example": True}, "search": {"sampler": "grid", "n_trials": 24},
                                  "space": {"methods": ["linear", "alignment_slerp"], "grid_lambdas": [0.25, 0.75]}})
    points = grid_points(config.space, SOURCES)
    assert len(points) == 4
    config.search.n_trials = len(points)  # as run_optuna caps the grid's budget
    results, study = run_tune(config, tmp_path)

    assert results.num_errors == 0 and len(results) == 4
    visited = [t.params for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE])]
    assert sorted(map(str, visited)) == sorted(map(str, points))


def test_constraints_are_recorded_where_optuna_samplers_read_them():
    """TPE and NSGA-II read `FrozenTrial.constraints`: a trial violating them is infeasible."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    constraints = [parse_constraint("safety>=best_source", ["base", *SOURCES]),
                   parse_constraint("factuality>=0.5")]
    trial = study.ask()
    values = record_constraints(trial, {"safety": 0.5, "wtr.factuality": 0.6}, constraints, REFERENCES)
    study.tell(trial, [0.5, 0.6])
    assert values == pytest.approx([0.1, -0.1])
    assert study.trials[0].constraints == {"safety>=best_source": pytest.approx(0.1),
                                           "factuality>=0.5": pytest.approx(-0.1)}
