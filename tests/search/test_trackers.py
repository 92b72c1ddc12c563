"""`experiment.trackers`: refused at config time when the package is missing (with the extra to
install), and turned into Tune's own logger callbacks set up for the experiment. The runs an
MLflow tracker writes during a real search are checked in tests/search/test_search_e2e.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from search.config import SearchConfigError, parse_search_config
from search.trackers import tracker_callbacks, trial_params


def config_with(**experiment):
    return parse_search_config({"experiment": {"name": "e", **experiment}, "models": {"example": True}})


def test_a_tracker_whose_package_is_missing_is_refused_with_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: import and find_spec both fail
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(SearchConfigError) as info:
        config_with(trackers=["mlflow", "wandb"])
    assert str(info.value).splitlines()[1:] == [
        '  experiment.trackers: mlflow needs the mlflow package: pip install -e ".[mlflow]"; '
        'wandb needs the wandb package: pip install -e ".[wandb]"']


def test_installed_trackers_are_accepted_once_each_and_unknown_ones_named():
    assert config_with(trackers=["mlflow", "mlflow"]).experiment.trackers == ["mlflow"]  # the dev extra has it
    assert config_with().experiment.trackers == []
    with pytest.raises(SearchConfigError, match=r"experiment\.trackers\.0: Input should be 'mlflow' or 'wandb'"):
        config_with(trackers=["tensorboard"])


def test_tracker_settings_without_their_tracker_are_refused():
    with pytest.raises(SearchConfigError, match=r"experiment: mlflow_uri is set but trackers does not list mlflow"):
        config_with(mlflow_uri="sqlite:///elsewhere.db")
    with pytest.raises(SearchConfigError, match=r"experiment: wandb_project is set but trackers does not list wandb"):
        config_with(wandb_project="p")


def test_mlflow_writes_into_the_experiment_folder_unless_a_uri_is_given(tmp_path: Path):
    (callback,) = tracker_callbacks(config_with(trackers=["mlflow"]).experiment, tmp_path / "e")
    assert callback.tracking_uri == f"sqlite:///{tmp_path / 'e' / 'mlflow.db'}"
    assert callback.experiment_name == "e"
    (callback,) = tracker_callbacks(config_with(trackers=["mlflow"], mlflow_uri="http://tracking:5000").experiment,
                                    tmp_path / "e")
    assert callback.tracking_uri == "http://tracking:5000"
    assert tracker_callbacks(config_with().experiment, tmp_path / "e") == []


def test_trial_params_are_the_sampled_values_not_the_plan():
    config = {"plan": {"merge_method": "ties", "models": [{"model": "a"}]}, "trial_number": 3, "method": "ties",
              "density": 0.4, "w.a": 0.7}
    assert trial_params(config) == {"trial_number": 3, "method": "ties", "density": 0.4, "w.a": 0.7}
