"""The define-by-run search space: an Optuna trial in, a merge plan (mergekit schema) out.

Conditional on purpose: the method is drawn first and only that method's parameters are
suggested, so TPE models each method's parameters separately (`tune.sample_from` cannot
express this; Optuna never sees it). Parameter names are prefixed by what they mean,
not by method, where methods share a meaning (`density`, `lambda`, `w.<source>`), so
the sampler can learn across methods.

Every suggested parameter changes the merge (tests/search/test_space_knobs.py): a knob that
cancels inside the method would cost the sampler a dimension and the search trials.

- Weights are a simplex over the sources (λ for two), suggested only for methods that
  take weights (model_stock takes none and is searched by its name alone).
- Interpolation methods get one simplex per layer-curve knot: a per-layer λ (or SLERP t).
- Task-vector methods put the layer curve and the module multipliers (SoupLM's
  per-mapping weights) on their scale λ, not on the weights: ties, della and the other
  methods that normalise divide by the sum of the weights, so a multiplier shared by
  every source's weight cancels there, while λ scales the merged task vector after any
  normalisation and acts for every one of them (for methods that do not normalise, the
  two are the same merge).
- Randomised methods (DARE, DELLA) draw their drop masks from the search's fixed
  `search.merge_seed`: a searched seed would reward lucky masks, not better merges.

Everything is plain data, so a plan can be stored, exported and re-merged outside the search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from merging.registry import MethodSpec, get_method
from search.config import LayerCurve, Range, SpaceConfig

#: DELLA's keep probabilities density ± ε must lie strictly inside (0, 1); the density
#: range is kept this far inside that interval (see `_density_range`).
DELLA_MARGIN = 0.01


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


def _pick(trial: Trial, spec: MethodSpec, sources: list[str], pairwise: bool) -> list[str]:
    """The sources merged: all of them, or a suggested pair for two-model methods (and the grid)."""
    if (spec.max_models is not None or pairwise) and len(sources) > 2:  # slerp, nuslerp, alignment_slerp
        pair = trial.suggest_categorical("pair", [f"{a}+{b}" for i, a in enumerate(sources) for b in sources[i + 1:]])
        return pair.split("+")
    return sources


def _weights(trial: Trial, space: SpaceConfig, spec: MethodSpec, picked: list[str]) -> dict[str, float]:
    """Per-source weights of a task-vector method: a simplex, equal weights, or none at
    all for a method that takes no weights (nothing suggested that could not act)."""
    if "weight" not in spec.model_params:
        return {}
    if space.weights == "simplex":
        return _simplex(trial, picked, "")
    return {s: 1 / len(picked) for s in picked}


def _scale(trial: Trial, space: SpaceConfig, knots: int) -> float | list[float] | list[dict[str, Any]]:
    """λ of a task-vector method: the scale, times the layer curve (a gradient over the
    layers), times each module class's multiplier (filter entries, first match wins)."""
    scale = _float(trial, "scale", space.scale)
    curve = [1.0] if space.layer_curve is None else [
        _float(trial, f"curve.{j}", space.layer_curve.range) for j in range(knots)]
    value = _value([scale * c for c in curve])
    if space.module_multipliers is None:
        return value
    mults = {m: _float(trial, f"module.{m}", space.module_multipliers.range) for m in space.module_multipliers.modules}
    return _by_module(value, mults)


def _density_range(spec: MethodSpec, r: Range) -> Range:
    """The density range a method can merge with. DELLA keeps entries with probabilities
    density ± ε, which must lie in (0, 1): outside (ε, 1 − ε) its merge raises, and every
    such trial would be a failed one, so the range is clipped to that interval."""
    epsilon = spec.model_params.get("epsilon")
    if not isinstance(epsilon, float):
        return r
    high = min(r.high, 1.0 - epsilon - DELLA_MARGIN)
    low = min(max(r.low, epsilon + DELLA_MARGIN), high)
    return Range(low=low, high=high, log=r.log)


def suggest_plan(trial: Trial, space: SpaceConfig, sources: list[str], base: str, n_layers: int, *,
                 pairwise: bool = False, merge_seed: int = 0) -> dict[str, Any]:
    """One merge plan for `trial`; the plan's model names are the keys in `sources`/`base`.

    `pairwise` (the grid) merges two sources at a time for every method; `merge_seed`
    (`search.merge_seed`) seeds the drop masks of randomised methods."""
    method = trial.suggest_categorical("method", list(space.methods))
    spec = get_method(method)
    knots = _knots(space.layer_curve, n_layers)
    shared: dict[str, Any] = {}
    picked = _pick(trial, spec, sources, pairwise)

    if spec.family == "interpolation":
        # Per knot, a simplex over the sources: a per-layer λ (or t) when there is a curve.
        per_knot = [_simplex(trial, picked, f"k{j}." if knots > 1 else "") for j in range(knots)]
        weights: dict[str, Any] = {s: _value([k[s] for k in per_knot]) for s in picked}
    else:
        weights = _weights(trial, space, spec, picked)
        if "lambda" in spec.shared_params:
            shared["lambda"] = _scale(trial, space, knots)

    model_params: dict[str, dict[str, Any]] = {s: {} for s in picked}
    if spec.family == "sparse":
        density = _float(trial, "density", _density_range(spec, space.density))
        for s in picked:
            model_params[s]["density"] = density

    if method == "slerp":  # θ = slerp(source₁, source₂, t): mergekit puts source₁ in base_model
        first, second = picked
        shared["t"] = weights[second]
        plan = {"merge_method": "slerp", "base_model": first, "models": [{"model": second}], "parameters": shared}
    elif method == "alignment_slerp":
        shared["t"] = weights[picked[1]]
        plan = {"merge_method": method, "base_model": base, "models": [{"model": s} for s in picked],
                "parameters": shared}
    else:
        models = [{"model": s, "parameters": ({"weight": weights[s]} if s in weights else {}) | model_params[s]}
                  for s in picked]
        plan = {"merge_method": method, "models": models, "parameters": shared}
        if spec.base != "none":
            plan["base_model"] = base
    if spec.randomized:
        plan["seed"] = merge_seed
    plan["dtype"] = "bfloat16"
    return plan


#: Density of the sparsifying methods "at their defaults" (mergekit's examples use 0.5;
#: the registry's own default, 1.0, keeps everything and would make them plain task arithmetic).
DEFAULT_DENSITY = 0.5


@dataclass
class _DefaultsTrial:
    """Answers every suggestion with the parameter's default and records it, so the
    default point holds exactly the parameters `suggest_plan` asks for, whatever the space."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        if name == "density":
            value = DEFAULT_DENSITY
        elif name == "scale" or name.startswith(("curve.", "module.")):
            value = 1.0
        else:  # λ of a pair or a raw simplex draw: equal weights
            value = 0.5
        self.params[name] = min(max(value, low), high)
        return self.params[name]

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.params[name] = self.method if name == "method" else choices[0]
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int) -> int:
        self.params[name] = low
        return low


def default_point(method: str, space: SpaceConfig, sources: list[str], n_layers: int) -> dict[str, Any]:
    """The Optuna parameters under which `suggest_plan` gives `method` at its defaults:
    equal weights, task-vector scale 1, density 0.5, every curve knot and module
    multiplier 1, the first pair for two-model methods. Used to enqueue each method's
    default merge before a search (the league table's baseline)."""
    trial = _DefaultsTrial(method)
    suggest_plan(trial, space, sources, "base", n_layers)
    return trial.params


def _by_module(weight: float | list[float], mults: dict[str, float]) -> list[dict[str, Any]]:
    """Filter entries (first match wins): the value times each module class's multiplier."""
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
