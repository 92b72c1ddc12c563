"""Pick one merge from a finished search and ship it.

    run_search.py export EXP_DIR [--pick knee | --weights safety=2,factuality=1] [--require "safety>=0.9"]
                                 [--materialize OUT_DIR] [--force]

Candidates are the experiment's Pareto front (chosen on the search items, feasible under
the search's constraints), narrowed by `--require`; the pick is the knee (closest to the
ideal point after scaling) or the best weighted sum of the candidates' HELD-OUT scores when
the front was validated (`--on search` picks on the search items' scores instead): the
search scores of the front are the best of many tries on the same items and overstate it.
Export then says, per objective, whether the pick's lead over the best source on the
held-out items is beyond its 95 % paired bootstrap interval or inside it (a lead that
one lucky item can explain). Writes the plan with real model paths as our config and, when
mergekit has the method, as a mergekit YAML; `--materialize` writes the merged model folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from judges import paired_bootstrap
from merging import Merger, get_method, parse_plan, read_yaml, write_model
from search.config import load_search_config
from search.constraints import parse_constraint, score_of
from search.models import resolve_models
from search.pareto import knee, weighted_pick
from search.report import HOLDOUT, has_holdout
from search.results import dominating_references, front_indices, read_items, read_references

# Our additions to mergekit's schema: dropped from the mergekit YAML.
OURS_ONLY_KEYS = ("seed", "rescale_norm", "lerp_norms")


class ExportError(ValueError):
    """Nothing to export (no finished trials, nothing meets the requirements, bad weights)."""


@dataclass
class Export:
    trial_number: int
    scores: dict[str, float]
    plan_path: Path
    mergekit_path: Path | None
    model_dir: Path | None
    beaten_by: list[str]  # reference models better on every objective: shipping one of them may be wiser
    picked_on: str = "search"  # "held-out" or "search": whose scores chose the pick
    leads: list[str] = field(default_factory=list)  # per objective: the pick vs the best source, with its interval


def parse_weights(text: str, objectives: list[str]) -> list[float]:
    weights = dict.fromkeys(objectives, 0.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name.strip() not in weights:
            raise ExportError(f"--weights: {name.strip()!r} is not an objective of this search ({', '.join(objectives)})")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ExportError(f"--weights: {part!r} is not name=number") from None
    return [weights[o] for o in objectives]


def choose(exp_dir: Path, *, weights: str | None = None, require: list[str] = (),
           on: str = "holdout") -> tuple[dict[str, Any], Any, dict[str, dict[str, float]], str]:
    """The picked trial's row, the experiment config, the reference models' scores and which
    scores picked it ("held-out", or "search" when asked or when the front was not validated)."""
    config = load_search_config(exp_dir / "config.yaml")
    objectives = list(config.search.objectives)
    path = exp_dir / "trials.parquet"
    if not path.exists():
        raise ExportError(f"{exp_dir}: no trials.parquet — is this an experiment folder with finished trials?")
    rows = pd.read_parquet(path).to_dict("records")
    references = read_references(exp_dir)
    constraints = [parse_constraint(c, list(references), objectives) for c in [*config.search.constraints, *require]]
    front = front_indices(rows, objectives, constraints, references)
    if not front:
        raise ExportError(f"no finished trial meets {[str(c) for c in constraints] or 'the search'}; "
                          f"{sum(r.get('status') == 'ok' for r in rows)} of {len(rows)} trials finished")
    held = on == "holdout" and all(has_holdout(rows[i], objectives) for i in front)
    prefix = HOLDOUT if held else ""
    points = [[float(rows[i][prefix + o]) for o in objectives] for i in front]
    pick = weighted_pick(points, parse_weights(weights, objectives)) if weights else knee(points)
    return rows[front[pick]], config, references, "held-out" if held else "search"


def leads_over_sources(exp_dir: Path, row: dict[str, Any], references: dict[str, dict[str, float]],
                       objectives: list[str], sources: list[str], *, held_out: bool) -> list[str]:
    """Per objective, the pick against the source that scores best on it, paired over the items
    both answered: the lead and its 95 % bootstrap interval, and whether the interval excludes 0."""
    files, column = ("holdout_", HOLDOUT) if held_out else ("", "")
    mine = read_items(exp_dir, f"{files}trial_{int(row['trial_number']):04d}")
    if mine is None:
        return []
    lines = []
    for o in objectives:
        scored = {s: score_of(references.get(s, {}), column + o) for s in sources}
        scored = {s: v for s, v in scored.items() if not math.isnan(v)}
        if not scored:
            continue
        best = max(scored, key=scored.get)
        theirs = read_items(exp_dir, f"{files}ref_{best}")
        if theirs is None:
            continue
        ci = paired_bootstrap(mine.get(o, {}), theirs.get(o, {}))
        where = "held-out" if held_out else "search"
        verdict = ("beyond its 95 % interval" if ci.low > 0 or ci.high < 0 else
                   "INSIDE its 95 % interval: these items cannot tell them apart")
        lines.append(f"{o}: pick − {best} (best source) = {ci.estimate:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] on the "
                     f"{where} items, {verdict}")
    return lines


def to_mergekit(plan: dict[str, Any]) -> dict[str, Any] | None:
    if not get_method(plan["merge_method"]).mergekit:
        return None
    out = {k: v for k, v in plan.items() if k not in OURS_ONLY_KEYS}
    out["parameters"] = {k: v for k, v in plan.get("parameters", {}).items() if k not in OURS_ONLY_KEYS}
    return out


def with_paths(plan: dict[str, Any], models: dict[str, str]) -> dict[str, Any]:
    """Replace the search's model keys by the folders they stand for."""
    out = dict(plan)
    if "base_model" in out:
        out["base_model"] = models[out["base_model"]]
    out["models"] = [{**m, "model": models[m["model"]]} for m in plan["models"]]
    return out


def export(exp_dir: Path, *, weights: str | None = None, require: list[str] = (), materialize: Path | None = None,
           force: bool = False, on: str = "holdout") -> Export:
    row, config, references, picked_on = choose(exp_dir, weights=weights, require=require, on=on)
    number = int(row["trial_number"])
    plan_file = exp_dir / "plans" / f"trial_{number:04d}.yaml"
    if not plan_file.exists():
        raise ExportError(f"{plan_file} is missing: the trial's plan was not saved")
    models, _ = resolve_models(config)
    plan = with_paths(read_yaml(plan_file, ExportError), models)
    merged = parse_plan(plan, str(plan_file))  # validated before anything is written
    out_dir = exp_dir / "export"
    out_dir.mkdir(exist_ok=True)
    ours = out_dir / f"trial_{number:04d}.soupsearch.yaml"
    prefix = HOLDOUT if picked_on == "held-out" else ""
    scores = {o: round(float(row[prefix + o]), 4) for o in config.search.objectives
              if not math.isnan(float(row[prefix + o]))}
    header = f"# soupsearch export of trial {number} from {exp_dir}\n# {picked_on} scores: {scores}\n"
    ours.write_text(header + yaml.safe_dump(plan, sort_keys=False))
    mk = to_mergekit(plan)
    mk_path = None
    if mk is not None:
        mk_path = out_dir / f"trial_{number:04d}.mergekit.yaml"
        mk_path.write_text(header + yaml.safe_dump(mk, sort_keys=False))
    model_dir = None
    if materialize is not None:
        merger = Merger({m: m for m in merged.referenced_models()}, merged.base_model, device="auto", resident=False)
        try:
            model_dir = write_model(merger.merge(merged), materialize, base_dir=models["base"], force=force,
                                    extra_files={"soupsearch_merge.yaml": ours.read_text()})
        finally:
            merger.close()
    objectives = list(config.search.objectives)
    beaten_by = dominating_references(row, references, objectives)
    sources = [k for k in references if k != "base"]
    leads = leads_over_sources(exp_dir, row, references, objectives, sources, held_out=picked_on == "held-out")
    return Export(number, scores, ours, mk_path, model_dir, beaten_by, picked_on, leads)
