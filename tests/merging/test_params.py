"""Gradients and filters resolve to the right per-tensor values (mergekit semantics + shorthands)."""

import pytest

from merging.names import layer_index, layer_position, module_class
from merging.params import FilterEntry, evaluate, filter_matches, interpolate
from merging.plan import parse_plan
from merging.resolve import resolve_call_kwargs

Q = "model.layers.2.self_attn.q_proj.weight"
DOWN = "model.layers.1.mlp.down_proj.weight"
NORM = "model.layers.0.input_layernorm.weight"


@pytest.mark.parametrize("name,cls", [
    (Q, "q"), ("model.layers.2.self_attn.k_proj.weight", "k"), ("model.layers.2.self_attn.v_proj.weight", "v"),
    ("model.layers.2.self_attn.o_proj.weight", "o"), ("model.layers.0.mlp.gate_proj.weight", "gate"),
    ("model.layers.0.mlp.up_proj.weight", "up"), (DOWN, "down"), (NORM, "norm"),
    ("model.layers.3.post_attention_layernorm.weight", "norm"), ("model.norm.weight", "norm"),
    ("model.layers.0.self_attn.q_norm.weight", "norm"), ("model.embed_tokens.weight", "embed"),
    ("lm_head.weight", "lm_head"), ("transformer.h.4.attn.c_attn.weight", "qkv"),
])
def test_module_class(name, cls):
    assert module_class(name) == cls


def test_layer_position_follows_mergekit():
    assert layer_index(Q) == 2 and layer_index("model.norm.weight") is None
    assert layer_position(Q, 5) == 0.5
    assert layer_position("model.layers.4.mlp.up_proj.weight", 5) == 1.0
    assert layer_position("lm_head.weight", 5) == 0.0  # outside the blocks mergekit uses t = 0


def test_gradient_interpolation():
    assert interpolate([0.0, 1.0], 0.25) == 0.25
    assert interpolate([0.0, 1.0, 0.0], 0.75) == pytest.approx(0.5)
    assert interpolate([0.1, 0.2, 0.3, 0.4, 0.5], 0.5) == pytest.approx(0.3)  # one value per layer
    assert interpolate([2.0], 0.7) == 2.0
    assert interpolate([True, False], 0.9) is True  # non-numeric: knot at or below t


def test_filters_first_match_wins_with_shorthands():
    setting = [FilterEntry(filter="q", value=0.1), FilterEntry(filter="mlp", value=[0.0, 1.0]),
               FilterEntry(filter="norm", value=0.3), FilterEntry(value=0.9)]
    assert evaluate(setting, Q, layer_position(Q, 3)) == 0.1
    assert evaluate(setting, "model.layers.2.self_attn.k_proj.weight", 1.0) == 0.9  # "q" is a class, not a substring
    assert evaluate(setting, DOWN, layer_position(DOWN, 3)) == pytest.approx(0.5)
    assert evaluate(setting, NORM, 0.0) == 0.3
    assert evaluate(setting, "lm_head.weight", 0.0) == 0.9


def test_filter_match_kinds():
    assert filter_matches("self_attn", Q)                    # mergekit substring
    assert filter_matches("*layers.2.*proj*", Q)            # glob (whole name)
    assert filter_matches("attn", Q) and not filter_matches("attn", DOWN)
    assert filter_matches("o", "model.layers.0.self_attn.o_proj.weight") and not filter_matches("o", DOWN)
    assert not filter_matches("embed", Q) and filter_matches(None, Q) and filter_matches("*", Q)
    assert evaluate([FilterEntry(filter="embed", value=1.0)], Q, 0.0) is None  # nothing matched


def test_per_layer_per_mapping_plan_resolves_for_each_tensor():
    plan = parse_plan({
        "merge_method": "task_arithmetic", "base_model": "b",
        "models": [
            {"model": "x", "parameters": {"weight": [{"filter": "q", "value": [0.0, 0.5, 1.0]},
                                                     {"filter": "mlp", "value": 2.0}, {"value": 1.0}]}},
            {"model": "y", "parameters": {"weight": 0.25}},
        ],
        "parameters": {"lambda": [1.0, 3.0]},
    })
    kw = resolve_call_kwargs(plan, "model.layers.1.self_attn.q_proj.weight", n_layers=3)
    assert kw["weight"] == [0.5, 0.25] and kw["lambda_"] == 2.0 and kw["normalize"] is False
    kw = resolve_call_kwargs(plan, DOWN, n_layers=3)
    assert kw["weight"] == [2.0, 0.25]
    kw = resolve_call_kwargs(plan, "model.embed_tokens.weight", n_layers=3)
    assert kw["weight"] == [1.0, 0.25] and kw["lambda_"] == 1.0


def test_global_parameter_is_the_default_for_models():
    plan = parse_plan({"merge_method": "linear", "models": [{"model": "x"}, {"model": "y", "parameters": {"weight": 3}}],
                       "parameters": {"weight": 1.0}})
    assert resolve_call_kwargs(plan, Q, 3)["weight"] == [1.0, 3.0]
