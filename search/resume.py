"""Resuming a stopped search: the finished trials read back, and the Optuna study made to agree
with the files (trials it still calls RUNNING are completed or failed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search.config import DIMENSIONS
from search.pareto import is_finite_number


def recover_rows(exp_dir: Path, storage: Any, study_name: str, objectives: list[str]) -> list[dict[str, Any]]:
    """Finished trials of a stopped run: rows from trials.parquet, plus any trial the study
    completed after the last file write. A trial the study still calls RUNNING is completed
    with its row's values when the row made it to disk first (the driver died between
    writing the files and telling Optuna), pruned when its row says racing stopped it, and
    failed when its result never arrived. Pruned rows stay pruned: read back with their status,
    they never reach the front, and PRUNED study trials are left as they are."""
    import optuna
    import pandas as pd

    path = exp_dir / "trials.parquet"
    rows = pd.read_parquet(path).to_dict("records") if path.exists() else []
    known = {int(r["trial_number"]): r for r in rows}
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return rows
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            row = known.get(t.number, {})
            values = [row.get(o) for o in objectives] if row.get("status") == "ok" else []
            if row.get("status") == "pruned":  # stopped by racing on items: pruned it stays
                study.tell(t.number, state=optuna.trial.TrialState.PRUNED)
            elif values and all(is_finite_number(v) for v in values):
                study.tell(t.number, [float(v) for v in values], state=optuna.trial.TrialState.COMPLETE)
            else:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        elif t.state == optuna.trial.TrialState.COMPLETE and t.number not in known:
            rows.append({"trial_number": t.number, "method": t.params.get("method"), "status": "ok",
                         "params": json.dumps(t.params, sort_keys=True), "error": "", "recovered": True,
                         **dict(zip(objectives, t.values)),
                         **{f"wtr.{o}": v for o, v in zip(objectives, t.values) if o in DIMENSIONS}})
    return rows
