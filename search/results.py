"""The experiment folder's result files, rewritten after every trial (nothing lost on a crash).

    trials.parquet / trials.csv   one row per finished trial: params, every WTR, timings, status
    references.csv                base and each source under the same judge
    pareto.csv                    the non-dominated feasible trials on the objectives (+ which
                                  reference models still beat each of them: `dominated_by`)
    pareto.html                   2-D projections of the front, reference models marked
    hypervolume.csv               hypervolume of the front after each trial
    plans/trial_NNNN.yaml         each trial's merge plan (mergekit schema)
    items/trial_NNNN.parquet      per item and dimension: win-or-tie (0/1), for confidence intervals;
    items/ref_MODEL.parquet       the same for the base and each source
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from search.constraints import Constraint, feasible, score_of
from search.pareto import dominates, hypervolume, non_dominated
from search.pareto_plot import pareto_figure


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def front_indices(rows: Sequence[dict[str, Any]], objectives: Sequence[str], constraints: Sequence[Constraint],
                  references: dict[str, dict[str, float]]) -> list[int]:
    ok = [i for i, r in enumerate(rows) if r.get("status") == "ok" and feasible(r, constraints, references)]
    points = [[float(rows[i].get(o, math.nan)) for o in objectives] for i in ok]
    return [ok[j] for j in non_dominated(points)]


def write_results(exp_dir: Path, rows: list[dict[str, Any]], references: dict[str, dict[str, float]],
                  objectives: Sequence[str], constraints: Sequence[Constraint]) -> list[int]:
    """Rewrite every result file from `rows`; returns the front's row indices."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("plan", "answers")} for r in rows])
    if not table.empty:
        table = table.sort_values("trial_number", kind="stable")
        _atomic_write(exp_dir / "trials.parquet", lambda p: table.to_parquet(p, index=False))
        _atomic_write(exp_dir / "trials.csv", lambda p: table.to_csv(p, index=False))
    front = front_indices(rows, objectives, constraints, references)
    pareto = table.iloc[0:0].assign(dominated_by=[]) if not front else pd.DataFrame(
        [{k: v for k, v in rows[i].items() if k not in ("plan", "answers")}
         | {"dominated_by": ",".join(dominating_references(rows[i], references, objectives))} for i in front])
    pareto = pareto[_leading(list(pareto.columns), objectives)]
    _atomic_write(exp_dir / "pareto.csv", lambda p: pareto.to_csv(p, index=False))
    _write_hypervolume(exp_dir, rows, objectives, constraints, references)
    figure = pareto_figure(rows, front, references, objectives, f"soupsearch {exp_dir.name}: every trial and the "
                           f"reference models on each pair of objectives (hover a point for its trial)")
    _atomic_write(exp_dir / "pareto.html", lambda p: figure.write_html(p, include_plotlyjs=True))
    return front


def _leading(columns: list[str], objectives: Sequence[str]) -> list[str]:
    """What a reader opens pareto.csv for first: trial, method, each objective with its interval
    and its held-out score and interval, who beats it; then everything else as it came."""
    first = ["trial_number", "method"]
    for o in objectives:
        first += [o, f"{o}_low", f"{o}_high", f"holdout.{o}", f"holdout.{o}_low", f"holdout.{o}_high"]
    first += ["holdout_items", "dominated_by"]
    lead = [c for c in first if c in columns]
    return lead + [c for c in columns if c not in lead]


def dominating_references(row: dict[str, Any], references: dict[str, dict[str, float]],
                          objectives: Sequence[str]) -> list[str]:
    """Reference models (base, sources) that beat this trial on every objective.

    The front is computed among trials, so a trial can sit on it and still be worse than
    simply shipping one of the sources; users must see that before they export it."""
    point = [float(row.get(o, math.nan)) for o in objectives]
    return [name for name, ref in references.items()
            if dominates([score_of(ref, o) for o in objectives], point)]


def write_references(exp_dir: Path, references: dict[str, dict[str, float]]) -> None:
    frame = pd.DataFrame([{"model": k, **v} for k, v in references.items()])
    _atomic_write(exp_dir / "references.csv", lambda p: frame.to_csv(p, index=False))


def read_references(exp_dir: Path) -> dict[str, dict[str, float]]:
    path = exp_dir / "references.csv"
    if not path.exists():
        return {}
    frame = pd.read_csv(path)
    return {row["model"]: {k: v for k, v in row.items() if k != "model"} for row in frame.to_dict("records")}


def write_items(exp_dir: Path, key: str, indicators: dict[str, dict[str, float]]) -> Path:
    """items/KEY.parquet: one row per (dimension, item) with its 0/1 win-or-tie: what
    bootstrap confidence intervals of WTR and mean-diffs are computed from."""
    rows = [{"dimension": d, "item_id": i, "win_tie": x} for d, items in indicators.items() for i, x in items.items()]
    folder = exp_dir / "items"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.parquet"
    table = pd.DataFrame(rows, columns=["dimension", "item_id", "win_tie"])
    _atomic_write(path, lambda p: table.to_parquet(p, index=False))
    return path


def read_items(exp_dir: Path, key: str) -> dict[str, dict[str, float]] | None:
    """items/KEY.parquet read back as `write_items` took it (dimension or objective -> item ->
    score); None when the file does not exist (a trial that failed, a run before intervals)."""
    path = exp_dir / "items" / f"{key}.parquet"
    if not path.exists():
        return None
    out: dict[str, dict[str, float]] = {}
    for dim, item, x in pd.read_parquet(path)[["dimension", "item_id", "win_tie"]].itertuples(index=False):
        out.setdefault(dim, {})[item] = float(x)
    return out


def write_plan(exp_dir: Path, number: int, plan: dict[str, Any]) -> Path:
    path = exp_dir / "plans" / f"trial_{number:04d}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda p: p.write_text(yaml.safe_dump(plan, sort_keys=False)))
    return path


def _write_hypervolume(exp_dir: Path, rows, objectives, constraints, references) -> None:
    reference_point = [0.0] * len(objectives)  # WTRs live in [0, 1]
    ordered = sorted(rows, key=lambda r: r["trial_number"])
    history = []
    for n in range(1, len(ordered) + 1):
        seen = ordered[:n]
        front = front_indices(seen, objectives, constraints, references)
        points = [[float(seen[i][o]) for o in objectives] for i in front]
        history.append({"trials": n, "trial_number": seen[-1]["trial_number"],
                        "hypervolume": hypervolume(points, reference_point)})
    frame = pd.DataFrame(history)
    _atomic_write(exp_dir / "hypervolume.csv", lambda p: frame.to_csv(p, index=False))
