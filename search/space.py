"""The define-by-run search space: an Optuna trial in, a merge plan (mergekit schema) out.

Conditional on purpose: the method is drawn first and only that method's parameters are
suggested, so TPE models each method's parameters separately (`tune.sample_from` cannot
express this; Optuna never sees it). Parameter names are prefixed by what they mean,
not by method, where methods share a meaning (`density`, `lambda`, `w.<source>`), so
the sampler can learn across methods.

Weights are a simplex over the sources (λ for two). With a layer curve, each knot gets
its own simplex (interpolation methods: a per-layer λ or SLERP t) or its own magnitude
multiplier (task-vector methods); module multipliers scale task vectors per module class
(SoupLM's per-mapping weights). Everything is plain data, so a plan can be stored,
exported and re-merged outside the search.
"""

from __future__ import annotations

from typing import Any, Protocol

from merging.registry import get_method
from search.config import LayerCurve, Range, SpaceConfig

INTERPOLATION = {"linear", "slerp", "alignment_slerp", "nuslerp", "multislerp", "karcher"}
SPARSE = {"ties", "dare_linear", "dare_ties", "della", "della_linear", "breadcrumbs", "breadcrumbs_ties"}


class Trial(Protocol):
    """The part of `optuna.Trial` the space uses (Ray's captured trial wraps it)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...

    def suggest_int(self, name: str, low: int, high: int) -> int: ...


def _float(trial: Trial, name: str, r: Range) -> float:
    return r.low if r.low == r.high else trial.suggest_float(name, r.low, r.high, log=r.log)


def _simplex(trial: Trial, sources: list[str], prefix: str) -> dict[str, float]:
    """Weights ≥ 0 summing to 1: λ for two sources, normalised uniform draws for more."""
    if len(sources) == 2:
        lam = trial.suggest_float(f"{prefix}lambda", 0.0, 1.0)
        return {sources[0]: 1.0 - lam, sources[1]: lam}
    raw = {s: trial.suggest_float(f"{prefix}w.{s}", 0.0, 1.0) for s in sources}
    total = sum(raw.values())
    return {s: (v / total if total > 0 else 1.0 / len(sources)) for s, v in raw.items()}


def _knots(curve: LayerCurve | None, n_layers: int) -> int:
    if curve is None:
        return 1
    return n_layers if curve.per_layer else min(curve.knots, n_layers)


def _value(values: list[float]) -> float | list[float]:
    return values[0] if len(values) == 1 else [round(v, 6) for v in values]


def suggest_plan(trial: Trial, space: SpaceConfig, sources: list[str], base: str, n_layers: int, *,
                 pairwise: bool = False) -> dict[str, Any]:
    """One merge plan for `trial`; the plan's model names are the keys in `sources`/`base`.

    `pairwise` (the grid) merges two sources at a time for every method."""
    method = trial.suggest_categorical("method", list(space.methods))
    spec = get_method(method)
    knots = _knots(space.layer_curve, n_layers)
    shared: dict[str, Any] = {}
    picked = sources
    if (spec.max_models is not None or pairwise) and len(sources) > 2:  # slerp, nuslerp, alignment_slerp
        pair = trial.suggest_categorical("pair", [f"{a}+{b}" for i, a in enumerate(sources) for b in sources[i + 1:]])
        picked = pair.split("+")

    if method in INTERPOLATION:
        # Per knot, a simplex over the sources: a per-layer λ (or t) when there is a curve.
        per_knot = [_simplex(trial, picked, f"k{j}." if knots > 1 else "") for j in range(knots)]
        weights = {s: _value([k[s] for k in per_knot]) for s in picked}
    else:
        mix = _simplex(trial, picked, "") if space.weights == "simplex" else {s: 1 / len(picked) for s in picked}
        curve = [1.0] * knots if space.layer_curve is None else [
            _float(trial, f"curve.{j}", space.layer_curve.range) for j in range(knots)]
        weights = {s: _value([mix[s] * c for c in curve]) for s in picked}
        if space.module_multipliers is not None:
            mults = {m: _float(trial, f"module.{m}", space.module_multipliers.range)
                     for m in space.module_multipliers.modules}
            weights = {s: _by_module(w, mults) for s, w in weights.items()}
        if "lambda" in spec.shared_params:
            shared["lambda"] = _float(trial, "scale", space.scale)

    model_params: dict[str, dict[str, Any]] = {s: {} for s in picked}
    if method in SPARSE:
        density = _float(trial, "density", space.density)
        for s in picked:
            model_params[s]["density"] = density
    if method in ("dare_linear", "dare_ties", "della", "della_linear"):
        shared_seed = trial.suggest_int("seed", 0, 2**16)
    else:
        shared_seed = None

    if method == "slerp":  # θ = slerp(source₁, source₂, t): mergekit puts source₁ in base_model
        first, second = picked
        shared["t"] = weights[second]
        plan = {"merge_method": "slerp", "base_model": first, "models": [{"model": second}], "parameters": shared}
    elif method == "alignment_slerp":
        shared["t"] = weights[picked[1]]
        plan = {"merge_method": method, "base_model": base, "models": [{"model": s} for s in picked],
                "parameters": shared}
    else:
        uses_weight = "weight" in spec.model_params
        models = [{"model": s, "parameters": ({"weight": weights[s]} if uses_weight else {}) | model_params[s]}
                  for s in picked]
        plan = {"merge_method": method, "models": models, "parameters": shared}
        if spec.base != "none":
            plan["base_model"] = base
    if shared_seed is not None:
        plan["seed"] = shared_seed
    plan["dtype"] = "bfloat16"
    return plan


#: Density of the sparsifying methods "at their defaults" (mergekit's examples use 0.5;
#: the registry's own default, 1.0, keeps everything and would make them plain task arithmetic).
DEFAULT_DENSITY = 0.5


def default_point(method: str, space: SpaceConfig, sources: list[str], n_layers: int) -> dict[str, Any]:
    """The Optuna parameters under which `suggest_plan` gives `method` at its defaults:
    equal weights, task-vector scale 1, density 0.5, every curve knot and module
    multiplier 1, seed 0, the first pair for two-model methods. Used to enqueue each
    method's default merge before a search (the league table's baseline)."""
    spec = get_method(method)
    knots = _knots(space.layer_curve, n_layers)
    picked = sources
    point: dict[str, Any] = {"method": method}
    if spec.max_models is not None and len(sources) > 2:
        point["pair"] = f"{sources[0]}+{sources[1]}"
        picked = sources[:2]

    def simplex(prefix: str) -> dict[str, float]:
        return {f"{prefix}lambda": 0.5} if len(picked) == 2 else {f"{prefix}w.{s}": 0.5 for s in picked}

    if method in INTERPOLATION:
        for j in range(knots):
            point |= simplex(f"k{j}." if knots > 1 else "")
    else:
        if space.weights == "simplex":
            point |= simplex("")
        if space.layer_curve is not None:
            point |= {f"curve.{j}": 1.0 for j in range(knots)}
        if space.module_multipliers is not None:
            point |= {f"module.{m}": 1.0 for m in space.module_multipliers.modules}
        if "lambda" in spec.shared_params and space.scale.low != space.scale.high:
            point["scale"] = min(max(1.0, space.scale.low), space.scale.high)
    if method in SPARSE and space.density.low != space.density.high:
        point["density"] = min(max(DEFAULT_DENSITY, space.density.low), space.density.high)
    if method in ("dare_linear", "dare_ties", "della", "della_linear"):
        point["seed"] = 0
    return point


def _by_module(weight: float | list[float], mults: dict[str, float]) -> list[dict[str, Any]]:
    """Filter entries (first match wins): each module class's weight times its multiplier."""
    def scaled(m: float) -> float | list[float]:
        return round(weight * m, 6) if isinstance(weight, float) else [round(v * m, 6) for v in weight]
    return [{"filter": module, "value": scaled(m)} for module, m in mults.items()] + [{"value": weight}]


def grid_points(space: SpaceConfig, sources: list[str]) -> list[dict[str, Any]]:
    """The heterogeneous-soups grid: every method × source pair × λ, as Optuna params."""
    pairs = [f"{a}+{b}" for i, a in enumerate(sources) for b in sources[i + 1:]]
    points = []
    for method in space.methods:
        for pair in pairs:
            for lam in space.grid_lambdas:
                point = {"method": method, "lambda": lam}
                if len(sources) > 2:
                    point["pair"] = pair
                points.append(point)
    return points
