"""Config validation: every error names the field and what was expected."""

import math

import pytest

from merging.plan import PlanError, load_plan, parse_plan
from merging.resolve import resolve_call_kwargs

BASE = {"merge_method": "ties", "base_model": "b",
        "models": [{"model": "x", "parameters": {"weight": 1.0, "density": 0.5}}, {"model": "y", "parameters": {"weight": 1.0}}]}


def _error(data) -> str:
    with pytest.raises(PlanError) as info:
        parse_plan(data, "cfg.yaml")
    return str(info.value)


def test_unknown_method_lists_known_ones():
    msg = _error({**BASE, "merge_method": "tiez"})
    assert "merge_method" in msg and "'tiez'" in msg and "ties" in msg and "task_arithmetic" in msg


def test_missing_base_model():
    msg = _error({k: v for k, v in BASE.items() if k != "base_model"})
    assert "needs `base_model`" in msg


def test_unknown_parameter_names_field_and_lists_known():
    msg = _error({**BASE, "parameters": {"lamda": 0.5}})
    assert "parameters.lamda" in msg and "lambda" in msg


def test_unknown_per_model_parameter():
    msg = _error({**BASE, "models": [{"model": "x", "parameters": {"weight": 1, "dens": 0.5}}, {"model": "y", "parameters": {"weight": 1}}]})
    assert "models[0].parameters.dens" in msg and "density" in msg


def test_required_weight_missing():
    msg = _error({"merge_method": "linear", "models": [{"model": "x", "parameters": {"weight": 1}}, {"model": "y"}]})
    assert "models[1] (y)" in msg and "parameters.weight" in msg


def test_wrong_type_and_unknown_top_level_field():
    msg = _error({**BASE, "dtype": "float8", "modelz": []})
    assert "dtype" in msg and "modelz" in msg


def test_model_count_for_method():
    msg = _error({"merge_method": "slerp", "base_model": "b", "models": [{"model": "x"}, {"model": "y"}]})
    assert "merges 1 models" in msg and "gives 2" in msg


def test_slices_are_refused_clearly():
    assert "slices" in _error({"merge_method": "linear", "slices": []})


def test_nan_weight_is_an_error_naming_field_and_tensor():
    plan = parse_plan({**BASE, "models": [{"model": "x", "parameters": {"weight": math.nan}}, {"model": "y", "parameters": {"weight": 1.0}}]})
    with pytest.raises(PlanError, match=r"models\[0\] \(x\)\.parameters\.weight.*model\.norm\.weight.*not a finite"):
        resolve_call_kwargs(plan, "model.norm.weight", 2)


def test_string_where_number_expected():
    plan = parse_plan({**BASE, "parameters": {"lambda": "big"}})
    with pytest.raises(PlanError, match=r"parameters\.lambda: ties expects a number, got 'big'"):
        resolve_call_kwargs(plan, "model.norm.weight", 2)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("merge_method: linear\nmodels: [\n")
    with pytest.raises(PlanError, match="bad.yaml: not valid YAML"):
        load_plan(path)
    with pytest.raises(PlanError, match="no such file"):
        load_plan(tmp_path / "missing.yaml")
    path.write_text("- just a list\n")
    with pytest.raises(PlanError, match="is a mapping"):
        load_plan(path)


def test_int8_mask_is_accepted_for_mergekit_configs():
    plan = parse_plan({**BASE, "parameters": {"int8_mask": True, "normalize": False}})
    assert plan.merge_method == "ties"
