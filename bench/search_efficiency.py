#!/usr/bin/env python
"""How fast each sampler finds a good front, on a cheap closed-form stand-in objective.

The real objective costs a merge, generation and judging per trial; this one is a formula
of the same plans (same `search.space`, same conditional parameters, the search's own
samplers from `search.samplers`), so hundreds of searches run in seconds and the samplers
can be compared over several seeds:

* each source has a profile over (safety, factuality, conciseness, proactivity) that pulls
  in a different direction (cautious / terse / proactive), and a merge's scores are the
  weight-mixed profiles with a concave bonus for balanced mixes (the "soup" effect),
* task-vector scale λ far from 1 and low density cost factuality; per-layer curves and
  module multipliers that stray from flat cost a little of everything; each method has a
  small fixed offset.

Printed, first: mean ± std hypervolume (reference point 0) after N trials for TPE,
NSGA-II (its population sized to N, `search.samplers.nsga2_population`), random and the
study's λ grid. Then, under a constraint (default `safety>=best_source`, the sources'
scores being their profiles): mean ± std hypervolume of the *feasible* front for TPE and
NSGA-II when the constraint is only applied to the front afterwards ("filter") and when
the sampler is told each trial's violation as the search does ("sampler",
`search.samplers.record_constraints`), over the bench's methods and over TIES alone
(NSGA-II evolves only the parameters all methods share: over several methods it samples
like random search, see `search.samplers.evolved_parameters`).

    .venv/bin/python bench/search_efficiency.py [--trials 40] [--seeds 5] [--constraint "safety>=best_source"]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import time
import warnings
from collections.abc import Sequence

import optuna

from search.config import parse_search_config
from search.constraints import Constraint, feasible, parse_constraint
from search.pareto import hypervolume, non_dominated
from search.samplers import make_sampler, nsga2_population, record_constraints
from search.space import grid_points, suggest_plan

SOURCES = ["dpo", "kto", "orpo"]
PROFILES = {"dpo": (0.85, 0.55, 0.45, 0.50), "kto": (0.55, 0.60, 0.85, 0.35), "orpo": (0.50, 0.65, 0.40, 0.85)}
METHOD_OFFSET = {"linear": 0.0, "task_arithmetic": 0.01, "ties": 0.03, "dare_ties": 0.02, "alignment_slerp": 0.025,
                 "breadcrumbs_ties": 0.02, "tsvm": 0.04, "slerp": 0.01}
OBJECTIVES = ["safety", "factuality", "conciseness", "proactivity"]
#: The reference models' scores: each source is its profile, the base a bland middle.
REFERENCES = {"base": {f"wtr.{o}": 0.5 for o in OBJECTIVES}} | {
    s: {f"wtr.{o}": v for o, v in zip(OBJECTIVES, p)} for s, p in PROFILES.items()}


def _mean(value) -> float:
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return statistics.fmean(_mean(v["value"]) for v in value)
        return statistics.fmean(value)
    return float(value)


def _flat(value) -> list[float]:
    if isinstance(value, list):
        return [x for v in value for x in (_flat(v["value"]) if isinstance(v, dict) else [v])]
    return [float(value)]


def stand_in_objective(plan: dict) -> tuple[float, ...]:
    if plan["merge_method"] == "slerp":
        t = _mean(plan["parameters"]["t"])
        weights = {plan["base_model"]: 1 - t, plan["models"][0]["model"]: t}
    elif plan["merge_method"] == "alignment_slerp":
        t = _mean(plan["parameters"]["t"])
        weights = {plan["models"][0]["model"]: 1 - t, plan["models"][1]["model"]: t}
    else:
        weights = {m["model"]: _mean(m.get("parameters", {}).get("weight", 1.0)) for m in plan["models"]}
    total = sum(weights.values()) or 1.0
    mix = {k: v / total for k, v in weights.items()}
    balance = 1 - sum(v * v for v in mix.values())  # 0 for one source, up to 2/3 for three
    lam = plan.get("parameters", {}).get("lambda", 1.0)  # scale × layer curve × module multipliers
    scale = _mean(lam)
    density = min((m.get("parameters", {}).get("density", 1.0) for m in plan["models"]), default=1.0)
    # how far per-layer / per-module values stray from flat: in λ (task-vector methods) or in
    # per-knot weights (interpolation methods)
    curve = _flat(lam) if isinstance(lam, list) else [
        v for m in plan["models"] for v in _flat(m.get("parameters", {}).get("weight", 1.0))]
    roughness = statistics.pstdev(curve) if len(curve) > 1 else 0.0
    offset = METHOD_OFFSET.get(plan["merge_method"], 0.0)
    scores = []
    for d in range(4):
        value = sum(mix[s] * PROFILES[s][d] for s in mix) + 0.15 * math.sqrt(balance) + offset
        if d == 1:  # factuality suffers from aggressive sparsification and scaling
            value -= 0.3 * (1 - density) ** 2 + 0.2 * (scale - 1) ** 2
        value -= 0.1 * roughness
        scores.append(max(0.0, min(1.0, value)))
    return tuple(scores)


def _config(sampler_name: str, trials: int, seed: int, methods: Sequence[str] | None = None):
    if methods is None:
        methods = list(METHOD_OFFSET) if sampler_name != "grid" else ["linear", "slerp", "alignment_slerp"]
    return parse_search_config({"models": {"example": True}, "space": {
        "methods": list(methods), "layer_curve": None if sampler_name == "grid" else {"knots": 3}},
        "search": {"sampler": sampler_name, "n_trials": trials, "seed": seed}})


def run(sampler_name: str, trials: int, seed: int, constraints: Sequence[Constraint] = (),
        guided: bool = False, methods: Sequence[str] | None = None) -> float:
    """One search of `trials` trials; the hypervolume of its feasible front under `constraints`.
    `guided`: the sampler is told each trial's constraint violations (as the search does)."""
    config = _config(sampler_name, trials, seed, methods)
    with contextlib.redirect_stdout(io.StringIO()):  # make_sampler says what it chose; printed once in main
        sampler = make_sampler(config, SOURCES)
    if sampler_name == "grid":
        trials = min(trials, len(grid_points(config.space, SOURCES)))
    study = optuna.create_study(directions=["maximize"] * 4, sampler=sampler)
    values: list[tuple[float, ...]] = []

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        plan = suggest_plan(trial, config.space, SOURCES, "base", 30, pairwise=sampler_name == "grid")
        values.append(stand_in_objective(plan))
        if guided:
            record_constraints(trial, dict(zip(OBJECTIVES, values[-1])), constraints, REFERENCES)
        return values[-1]

    study.optimize(objective, n_trials=trials)
    ok = [v for v in values if feasible(dict(zip(OBJECTIVES, v)), constraints, REFERENCES)]
    return hypervolume([ok[i] for i in non_dominated(ok)], (0.0,) * 4) if ok else 0.0


def _row(label: str, hvs: list[float], seconds: float) -> str:
    return f"{label:16s} {statistics.fmean(hvs):8.4f} {statistics.pstdev(hvs):8.4f} {max(hvs):8.4f} {seconds:9.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--constraint", default="safety>=best_source",
                    help="the constraint of the second table ('' skips it)")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    header = f"{'':16s} {'mean':>8s} {'std':>8s} {'best':>8s} {'s/search':>9s}"
    print(f"hypervolume after {args.trials} trials (grid: all its points, at most {args.trials}), "
          f"{args.seeds} seeds, stand-in objective over {OBJECTIVES}; "
          f"NSGA-II population {nsga2_population(args.trials)}")
    print(header)
    for name in ("tpe", "nsga2", "random", "grid"):
        started = time.perf_counter()
        hvs = [run(name, args.trials, seed) for seed in range(args.seeds)]
        print(_row(name, hvs, (time.perf_counter() - started) / args.seeds))
    if not args.constraint:
        return 0
    constraint = parse_constraint(args.constraint, list(REFERENCES), OBJECTIVES)
    print(f"\nfeasible hypervolume under {constraint} (threshold {constraint.threshold(REFERENCES):.3f}): "
          f"constraint applied to the front afterwards (filter) or told to the sampler (sampler)")
    # Over several methods NSGA-II evolves only the parameters they share (here none but the
    # method), i.e. samples like random search (search.samplers.evolved_parameters); over
    # one method it evolves every parameter, so it is compared there too.
    for space, methods in ((f"{len(METHOD_OFFSET)} methods", list(METHOD_OFFSET)), ("ties only", ["ties"])):
        print(f"{space:16s} {'mean':>8s} {'std':>8s} {'best':>8s} {'s/search':>9s}")
        for name in ("tpe", "nsga2"):
            for guided in (False, True):
                started = time.perf_counter()
                hvs = [run(name, args.trials, seed, [constraint], guided, methods) for seed in range(args.seeds)]
                label = f"{name} {'sampler' if guided else 'filter'}"
                print(_row(label, hvs, (time.perf_counter() - started) / args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
