"""Turn a plan into the keyword arguments of one method call for one tensor.

This is where gradients and filters are evaluated (once per tensor, never inside a
method) and where every value is type-checked, so a NaN weight or a string density is
reported with the field and tensor it came from instead of producing a silent wrong merge.
"""

from __future__ import annotations

import math
from typing import Any

from merging.names import layer_position, module_class
from merging.params import Scalar, evaluate
from merging.plan import MergePlan, PlanError
from merging.registry import MethodSpec, python_name


def resolve_call_kwargs(plan: MergePlan, name: str, n_layers: int) -> dict[str, Any]:
    spec = plan.method
    t = layer_position(name, n_layers)
    kwargs: dict[str, Any] = {}
    for param, default in spec.shared_params.items():
        value = evaluate(plan.parameters.get(param), name, t)
        kwargs[python_name(param)] = default if value is None else _checked(
            spec, param, default, value, f"parameters.{param}", name)
    for param, default in spec.model_params.items():
        values = []
        for entry in plan.merged_models():
            setting = entry.parameters.get(param, plan.parameters.get(param))
            value = evaluate(setting, name, t)
            where = f"models[{plan.models.index(entry)}] ({entry.model}).parameters.{param}"
            if value is None:
                value = default
            if value is None:
                raise PlanError(f"{where}: no value for tensor {name} (no filter matched and no default)")
            values.append(_checked(spec, param, default, value, where, name))
        kwargs[python_name(param)] = values
    if spec.needs_module_class:
        kwargs["module_class"] = module_class(name)
    return kwargs


def _checked(spec: MethodSpec, param: str, default: Scalar | None, value: Scalar, where: str, tensor: str) -> Scalar:
    """Coerce to the default's type (numbers for required params); reject NaN/inf."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise PlanError(f"{where}: {spec.name} expects true/false, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise PlanError(f"{where}: {spec.name} expects a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlanError(f"{where}: {spec.name} expects a number, got {value!r}")
    if not math.isfinite(value):
        raise PlanError(f"{where}: value {value!r} for tensor {tensor} is not a finite number")
    return int(value) if isinstance(default, int) and float(value).is_integer() else float(value)
