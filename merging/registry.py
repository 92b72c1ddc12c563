"""Merge methods by name.

A merge method is a pure function over the tensors of one weight (float32, or for `fused`
methods the stored dtype):

    fn(tensors, base, *, <per-model params as sequences>, <shared params>, [generator], [module_class]) -> Tensor

`tensors` holds the models being merged (the base excluded, unless the method treats
the base as an ordinary input and the plan lists it among `models`), `base` the base
model's tensor or None. Parameters arrive already resolved for this one tensor
(gradients and filters are evaluated by `merging.params`, never inside a method), so a
method is a formula and nothing else. Each method lives in its own file under
`merging/methods/` and registers itself with one `register(MethodSpec(...))` line.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

MergeFn = Callable[..., torch.Tensor]
Scalar = float | int | bool | str


@dataclass(frozen=True)
class MethodSpec:
    """What the plan validator and the per-tensor resolver need to know about a method.

    model_params: per-model parameters (one value per merged model) and their defaults;
        a default of None makes the parameter required.
    shared_params: parameters with one value for all models, and their defaults.
    base: "required" (task-vector methods), "optional", or "none" (the base, if listed
        in `models`, is merged like any other model).
    randomized: takes `generator=`; the merger seeds it per tensor from the plan's seed.
    elementwise: each output element depends only on the inputs at the same position,
        so the merger may split big tensors into cache-sized chunks.
    needs_module_class: takes `module_class=` (e.g. "norm"), for methods that treat
        some kinds of tensor differently.
    fused: takes the inputs in their stored float dtype and `out_dtype=`, returns that
        dtype and raises merging.finite.NonFiniteMergeError on NaN/inf itself, so the
        merger neither upcasts inputs nor re-reads the output (on CPU each is a pass over
        memory as long as the merge; see merging.native).
    mergekit: the method exists in mergekit under the same name with the same meaning.
    """

    name: str
    fn: MergeFn
    model_params: Mapping[str, Scalar | None] = field(default_factory=dict)
    shared_params: Mapping[str, Scalar] = field(default_factory=dict)
    base: Literal["required", "optional", "none"] = "required"
    min_models: int = 1
    max_models: int | None = None
    randomized: bool = False
    elementwise: bool = False
    needs_module_class: bool = False
    fused: bool = False
    mergekit: bool = True


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in METHODS:
        raise ValueError(f"merge method {spec.name!r} is registered twice")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    _load_builtin_methods()
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise KeyError(f"unknown merge method {name!r}; known methods: {known}") from None


def method_names() -> list[str]:
    _load_builtin_methods()
    return sorted(METHODS)


def python_name(param: str) -> str:
    """YAML parameter name -> keyword argument name (`lambda` is a Python keyword)."""
    return param + "_" if keyword.iskeyword(param) else param


def _load_builtin_methods() -> None:
    import merging.methods  # noqa: F401  (importing registers every built-in method)
