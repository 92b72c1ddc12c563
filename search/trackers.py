"""Experiment trackers (MLflow, Weights & Biases) fed by Ray Tune's own logger callbacks.

Users of Tune expect their tracker to show every trial, and Tune ships the callbacks, so the
search only chooses and sets them up (`experiment.trackers`). Each trial becomes one tracker
run whose metrics are the trial's Tune result: every objective under its plain name with its
95 % interval (`<objective>_low`, `_high`), every judge dimension (`wtr.<dim>`,
`meandiff.<dim>`), the judge counts and the timings (`merge_s`, `swap_s`, `generate_s`,
`judge_s`, `trial_s`); its params are the sampled values and the method.

The packages are optional (extras `mlflow` and `wandb`). `missing_package` runs while the
config is validated, so a missing tracker stops the run before anything starts, not when the
Tuner starts after the references were scored.

MLflow writes, unless `experiment.mlflow_uri` says otherwise, to an SQLite file in the
experiment folder (`mlflow.db`, artifacts under `mlartifacts/`): MLflow 3 refuses its old
`./mlruns` file store by default, and the callback runs in the driver, so a local file is right
on a cluster too. `mlflow ui --backend-store-uri sqlite:///runs/<name>/mlflow.db` shows it.
"""

from __future__ import annotations

import importlib.util
import numbers
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.tune import Callback

    from search.config import ExperimentConfig

#: tracker -> the module its Tune callback imports (and the extra that installs it is the tracker's name)
TRACKERS = {"mlflow": "mlflow", "wandb": "wandb"}
#: Tune result keys that are not measurements: the trial's config (its plan's numbers would
#: pass for metrics) and the per-item scores (a JSON string, in the experiment's items/ files).
NOT_METRICS = ("config", "items_json")


def missing_package(tracker: str) -> str | None:
    """Why `tracker` cannot run here, naming the extra to install; None when it can."""
    module = TRACKERS[tracker]
    if importlib.util.find_spec(module) is None:
        return f'{tracker} needs the {module} package: pip install -e ".[{tracker}]"'
    return None


def default_mlflow_uri(exp_dir: Path) -> str:
    return f"sqlite:///{(exp_dir / 'mlflow.db').resolve()}"


def trial_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's tracker params: the sampled values (Optuna's names: `method`, `w.<source>`,
    `scale`, …) and the trial number; the plan itself, nested and long, stays in plans/."""
    return {k: v for k, v in config.items() if k != "plan"}


def tracker_callbacks(experiment: ExperimentConfig, exp_dir: Path) -> list[Callback]:
    """The Tune logger callbacks `experiment.trackers` names, set up for this experiment."""
    callbacks: list[Callback] = []
    if "mlflow" in experiment.trackers:
        uri = experiment.mlflow_uri or default_mlflow_uri(exp_dir)
        artifacts = None if experiment.mlflow_uri else str((exp_dir / "mlartifacts").resolve())
        callbacks.append(_mlflow_callback(uri, experiment.name, artifacts))
    if "wandb" in experiment.trackers:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=experiment.wandb_project or experiment.name,
                                             group=experiment.name, excludes=list(NOT_METRICS), dir=str(exp_dir)))
    return callbacks


def _mlflow_callback(uri: str, experiment_name: str, artifacts: str | None) -> Callback:
    """Tune's MLflow callback, changed where a search needs it: a run is named after the trial's
    number (`trial_0003`, as in plans/ and the tables); its params are `trial_params`, not the
    flattened plan (whose long values MLflow may refuse mid-search); the row's `status` and
    `error` are tags (a trial whose plan failed still completes in Tune's eyes); and params and
    metrics go in one `log_batch` per trial, not one call each (~60 metrics took 1.3 s of the
    driver's Tune loop on the SQLite store, one batch 0.05 s)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class SearchMLflowCallback(MLflowLoggerCallback):
        def setup(self, *args: Any, **kwargs: Any) -> None:
            if artifacts:  # a new MLflow experiment keeps its artifacts in the experiment folder
                self.mlflow_util.setup_mlflow(tracking_uri=self.tracking_uri, experiment_name=self.experiment_name,
                                              artifact_location=artifacts)
            super().setup(*args, **kwargs)
            self.client = MlflowClient(tracking_uri=self.tracking_uri)

        def log_trial_start(self, trial: Any) -> None:
            if trial not in self._trial_runs:
                number = trial.config.get("trial_number")
                name = f"trial_{number:04d}" if isinstance(number, int) else str(trial)
                run = self.mlflow_util.start_run(run_name=name, tags={**self.tags, "trial_name": str(trial)})
                self._trial_runs[trial] = run.info.run_id
                params = [Param(k, str(v)) for k, v in trial_params(trial.config).items()]
                self.client.log_batch(self._trial_runs[trial], params=params)

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            now, step = int(time.time() * 1000), int(result.get("training_iteration") or 0)
            metrics = [Metric(k, float(v), now, step) for k, v in result.items()
                       if k not in NOT_METRICS and isinstance(v, numbers.Real)]
            tags = [RunTag(k, result[k][:5000]) for k in ("status", "error") if isinstance(result.get(k), str)
                    and result[k]]
            self.client.log_batch(self._trial_runs[trial], metrics=metrics, tags=tags)

    return SearchMLflowCallback(uri, experiment_name=experiment_name)
