"""The run's Optuna study as optuna-dashboard reads it: objective names, trial user attributes,
the front's held-out scores on the study. On a real (in-memory) Optuna study; the same after a
real search is checked in tests/search/test_search_e2e.py."""

from __future__ import annotations

import math

import optuna

from search.study_labels import name_objectives, record_holdout, trial_attributes

OBJECTIVES = ["safety", "brevity"]


def test_objectives_are_named_and_naming_again_on_resume_keeps_them():
    study = optuna.create_study(directions=["maximize", "maximize"])
    name_objectives(study, OBJECTIVES)
    name_objectives(study, OBJECTIVES)
    assert study.metric_names == OBJECTIVES


def test_trial_attributes_keep_method_status_error_intervals_and_time_but_no_nan():
    result = {"method": "ties", "status": "ok", "error": "", "safety": 0.8, "safety_low": 0.6, "safety_high": 0.9,
              "brevity_low": math.nan, "brevity_high": math.nan, "trial_s": 12.5, "merge_s": 0.3, "config": {}}
    assert trial_attributes(result, OBJECTIVES) == {"method": "ties", "status": "ok", "safety_low": 0.6,
                                                     "safety_high": 0.9, "trial_s": 12.5}
    failed = {"method": "dare_ties", "status": "failed", "error": "judging failed: boom", "safety": math.nan}
    assert trial_attributes(failed, OBJECTIVES) == {"method": "dare_ties", "status": "failed",
                                                     "error": "judging failed: boom"}
    assert trial_attributes(None, OBJECTIVES) == {"status": "failed"}  # the trial's process crashed


def test_held_out_scores_of_validated_trials_go_on_the_study():
    study = optuna.create_study(directions=["maximize", "maximize"])
    rows = [{"trial_number": 0, "safety": 0.5},  # not on the front: never validated
            {"trial_number": 7, "safety": 0.9, "holdout.safety": 0.75, "holdout.safety_low": 0.5,
             "holdout.safety_high": 1.0, "holdout.brevity": math.nan, "holdout_items": 8.0,
             "holdout_status": "ok"}]
    assert record_holdout(study, rows) == 1
    assert study.user_attrs == {"holdout.trial_0007": {"safety": 0.75, "safety_low": 0.5, "safety_high": 1.0,
                                                       "items": 8}}
