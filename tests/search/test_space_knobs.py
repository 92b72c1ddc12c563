"""Every parameter the search space suggests changes the merge it describes.

A knob that cancels inside the method (a per-layer curve on the weights of a method that
divides by their sum, weights for a method that takes none) still costs the sampler a
dimension and the search trials. Here every registered method is planned at its default
point, each suggested parameter is moved on its own, and the two merges of the tiny family
must differ by more than float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from merging import Merger, parse_plan
from merging.registry import get_method, method_names
from search.config import parse_search_config
from search.space import default_point, suggest_plan

N_LAYERS = 3  # tests/conftest.py TINY_CONFIG
#: Deltas of the tiny family are ~5e-3; a knob moved by 30 % of its range changes some
#: merged entry by ~1e-3, float32 rounding of an equal merge by < 1e-6.
ACTS = 1e-5


@dataclass
class Probe:
    """A fake Optuna trial: answers from `point` (else the middle of the range or the first
    choice) and records every parameter the space suggests, with its range or choices."""

    point: dict[str, Any]
    seen: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        self.seen[name] = ("float", low, high)
        return self.point.get(name, (low + high) / 2)

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.seen[name] = ("categorical", list(choices))
        return self.point.get(name, choices[0])

    def suggest_int(self, name: str, low: int, high: int) -> int:
        self.seen[name] = ("int", low, high)
        return self.point.get(name, low)


def moved(kind: tuple[Any, ...], value: Any) -> Any:
    """Another legal value of a parameter, far from `value` (30-60 % of its range away)."""
    if kind[0] == "categorical":
        return next(c for c in kind[1] if c != value)
    low, high = kind[1], kind[2]
    if kind[0] == "int":
        return value + 1 if value < high else value - 1
    return low + (0.2 if value >= (low + high) / 2 else 0.8) * (high - low)


def space_config(sources: list[str]):
    return parse_search_config({"models": {"example": True}, "space": {
        "methods": method_names(), "layer_curve": {"knots": 3},
        "module_multipliers": {"modules": ["attn", "mlp", "norm", "embed", "lm_head"]}}}).space


def plan_at(point: dict[str, Any], space, sources: list[str]) -> tuple[dict[str, Any], Probe]:
    probe = Probe(point)
    plan = suggest_plan(probe, space, sources, "base", N_LAYERS)
    return plan | {"dtype": "float32"}, probe  # bf16 would round away the tiny family's small deltas


def largest_change(merger: Merger, a: dict[str, Any], b: dict[str, Any]) -> float:
    first, second = merger.merge_to_dict(parse_plan(a)), merger.merge_to_dict(parse_plan(b))
    return max(float((first[n] - second[n]).abs().max()) for n in first)


@pytest.mark.parametrize("n_sources", [2, 3])
@pytest.mark.parametrize("method", method_names())
def test_every_suggested_parameter_changes_the_merge(tiny_family, method, n_sources):
    sources = ["dpo", "kto", "orpo"][:n_sources]
    space = space_config(sources)
    merger = Merger({k: str(v) for k, v in tiny_family.items()}, base="base")
    point = default_point(method, space, sources, N_LAYERS)
    plan, probe = plan_at(point, space, sources)
    assert set(probe.seen) == set(point), "default_point must name exactly the parameters the space suggests"
    dead = []
    for name, kind in probe.seen.items():
        if name == "method":
            continue
        other, _ = plan_at(point | {name: moved(kind, point[name])}, space, sources)
        if largest_change(merger, plan, other) <= ACTS:
            dead.append(name)
    assert not dead, f"{method} with {n_sources} sources: {dead} change nothing in the merge"


@pytest.mark.parametrize("method", method_names())
def test_both_ends_of_every_suggested_range_merge(tiny_family, method):
    """A value the space may suggest but the method refuses (DELLA's density ± ε outside
    (0, 1)) would make a failed trial; every range end must merge."""
    sources = ["dpo", "kto", "orpo"]
    space = space_config(sources)
    merger = Merger({k: str(v) for k, v in tiny_family.items()}, base="base")
    point = default_point(method, space, sources, N_LAYERS)
    _, probe = plan_at(point, space, sources)
    for name, kind in probe.seen.items():
        for end in kind[1:] if kind[0] == "float" else ():
            plan, _ = plan_at(point | {name: end}, space, sources)
            merger.merge_to_dict(parse_plan(plan))


@pytest.mark.parametrize("method", method_names())
def test_random_methods_take_the_configured_seed_not_a_searched_one(method):
    sources = ["dpo", "kto", "orpo"]
    space = space_config(sources)
    probe = Probe(default_point(method, space, sources, N_LAYERS))
    plan = suggest_plan(probe, space, sources, "base", N_LAYERS, merge_seed=7)
    assert "seed" not in probe.seen
    assert plan.get("seed") == (7 if get_method(method).randomized else None)


def test_model_stock_is_searched_by_method_alone():
    """It takes no weights and no λ: a curve or module multiplier would have nothing to act on."""
    sources = ["dpo", "kto", "orpo"]
    probe = Probe({"method": "model_stock"})
    suggest_plan(probe, space_config(sources), sources, "base", N_LAYERS)
    assert set(probe.seen) == {"method"}


def test_layer_curve_and_module_multipliers_scale_lambda_of_normalising_methods():
    """TIES divides by the sum of the weights, so the curve and the multipliers go on λ."""
    sources = ["dpo", "kto", "orpo"]
    point = {"method": "ties", "w.dpo": 0.2, "w.kto": 0.2, "w.orpo": 0.6, "curve.0": 0.5, "curve.1": 1.0,
             "curve.2": 1.5, "module.attn": 1.5, "module.mlp": 1.0, "module.norm": 1.0, "module.embed": 1.0,
             "module.lm_head": 1.0, "scale": 1.2, "density": 0.4}
    plan, _ = plan_at(point, space_config(sources), sources)
    assert [m["parameters"]["weight"] for m in plan["models"]] == [0.2, 0.2, 0.6]
    assert plan["parameters"]["lambda"][0] == {"filter": "attn", "value": [0.9, 1.8, 2.7]}
    assert plan["parameters"]["lambda"][-1] == {"value": [0.6, 1.2, 1.8]}
    parse_plan(plan)


def test_default_point_merges_like_the_method_defaults(tiny_family):
    """At the default point a task-vector method gets λ = 1 everywhere (curve and multipliers 1)."""
    sources = ["dpo", "kto"]
    space = space_config(sources)
    plan, _ = plan_at(default_point("ties", space, sources, N_LAYERS), space, sources)
    merger = Merger({k: str(v) for k, v in tiny_family.items()}, base="base")
    plain = plan | {"parameters": {}}
    merged, reference = merger.merge_to_dict(parse_plan(plan)), merger.merge_to_dict(parse_plan(plain))
    assert all(torch.allclose(merged[n], reference[n], atol=1e-6) for n in merged)
