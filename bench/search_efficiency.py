#!/usr/bin/env python
"""How fast each sampler finds a good front, on a cheap closed-form stand-in objective.

The real objective costs a merge, generation and judging per trial; this one is a formula
of the same plans (same `search.space`, same conditional parameters), so hundreds of
searches run in seconds and the samplers can be compared over several seeds:

* each source has a profile over (safety, factuality, conciseness, proactivity) that pulls
  in a different direction (cautious / terse / proactive), and a merge's scores are the
  weight-mixed profiles with a concave bonus for balanced mixes (the "soup" effect),
* task-vector scale far from 1 and low density cost factuality; per-layer curves that
  stray from flat cost a little of everything; each method has a small fixed offset.

Printed: mean ± std hypervolume (reference point 0) after N trials for TPE, NSGA-II,
random and the study's λ grid. NSGA-II's first generation (50 by default) is random
sampling, so below 50 trials it equals random.

    .venv/bin/python bench/search_efficiency.py [--trials 40] [--seeds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import optuna

from search.config import parse_search_config
from search.pareto import hypervolume, non_dominated
from search.space import grid_points, suggest_plan

SOURCES = ["dpo", "kto", "orpo"]
PROFILES = {"dpo": (0.85, 0.55, 0.45, 0.50), "kto": (0.55, 0.60, 0.85, 0.35), "orpo": (0.50, 0.65, 0.40, 0.85)}
METHOD_OFFSET = {"linear": 0.0, "task_arithmetic": 0.01, "ties": 0.03, "dare_ties": 0.02, "alignment_slerp": 0.025,
                 "breadcrumbs_ties": 0.02, "tsvm": 0.04, "slerp": 0.01}
OBJECTIVES = ["safety", "factuality", "conciseness", "proactivity"]


def _mean(value) -> float:
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return statistics.fmean(_mean(v["value"]) for v in value)
        return statistics.fmean(value)
    return float(value)


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
    scale = plan.get("parameters", {}).get("lambda", 1.0)
    density = min((m.get("parameters", {}).get("density", 1.0) for m in plan["models"]), default=1.0)
    curve = [v for m in plan["models"] for v in _flat(m.get("parameters", {}).get("weight", 1.0))]
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


def _flat(value) -> list[float]:
    if isinstance(value, list):
        return [x for v in value for x in (_flat(v["value"]) if isinstance(v, dict) else [v])]
    return [float(value)]


def run(sampler_name: str, trials: int, seed: int) -> float:
    methods = list(METHOD_OFFSET) if sampler_name != "grid" else ["linear", "slerp", "alignment_slerp"]
    config = parse_search_config({"models": {"example": True}, "space": {
        "methods": methods, "layer_curve": None if sampler_name == "grid" else {"knots": 3}},
        "search": {"sampler": sampler_name}})
    if sampler_name == "grid":
        points = grid_points(config.space, SOURCES)
        grid = {k: sorted({p[k] for p in points}, key=str) for k in points[0]}
        sampler = optuna.samplers.GridSampler(grid, seed=seed)
        trials = min(trials, len(points))
    else:
        sampler = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True),
                   "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
                   "random": lambda: optuna.samplers.RandomSampler(seed=seed)}[sampler_name]()
    study = optuna.create_study(directions=["maximize"] * 4, sampler=sampler)
    values = []

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        plan = suggest_plan(trial, config.space, SOURCES, "base", 30, pairwise=sampler_name == "grid")
        values.append(stand_in_objective(plan))
        return values[-1]

    study.optimize(objective, n_trials=trials)
    front = [values[i] for i in non_dominated(values)]
    return hypervolume(front, (0.0,) * 4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    print(f"hypervolume after {args.trials} trials (grid: all its points, at most {args.trials}), "
          f"{args.seeds} seeds, stand-in objective over {OBJECTIVES}")
    print(f"{'sampler':8s} {'mean':>8s} {'std':>8s} {'best':>8s} {'s/search':>9s}")
    for name in ("tpe", "nsga2", "random", "grid"):
        started = time.perf_counter()
        hvs = [run(name, args.trials, seed) for seed in range(args.seeds)]
        seconds = (time.perf_counter() - started) / args.seeds
        print(f"{name:8s} {statistics.fmean(hvs):8.4f} {statistics.pstdev(hvs):8.4f} {max(hvs):8.4f} {seconds:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
