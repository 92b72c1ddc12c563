"""Merge methods by name, described by their own signatures.

A merge method is a pure function over the tensors of one weight (float32, or for fused
methods the stored dtype):

    fn(tensors, base, *, <per-model params>, <shared params>, [out_dtype], [generator], [module_class]) -> Tensor

`tensors` holds the models being merged (the base excluded, unless the method treats
the base as an ordinary input and the plan lists it among `models`), `base` the base
model's tensor or None. Parameters arrive already resolved for this one tensor
(gradients and filters are evaluated by `merging.params`, never inside a method), so a
method is a formula and nothing else. Each method lives in its own file under
`merging/methods/` and registers itself with one `register(fn, name, family=...)` line;
what the plan validator and the resolver need is read from the signature, as mergekit's
`@merge_method` reads annotations:

- a keyword parameter annotated `PerModel[...]` takes one value per merged model; its
  default (per model) is the `PerModel` marker's, none meaning required;
- any other keyword parameter is shared by all models, with its signature default
  (`lambda_` is YAML's `lambda`);
- `out_dtype` makes it fused (reads stored dtypes, returns `out_dtype`, raises
  merging.finite.NonFiniteMergeError itself), `generator` randomized (the merger seeds it
  per tensor from the plan's seed), `module_class` tells it the tensor's kind ("norm", ...);
- for a `functools.partial` variant, a keyword the partial binds is fixed when the
  function has no default for it (dare_ties's `consensus=True`) and is a new default
  otherwise (della's `normalize=True`).
"""

from __future__ import annotations

import functools
import inspect
import keyword
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch

MergeFn = Callable[..., torch.Tensor]
Scalar = float | int | bool | str
Family = Literal["interpolation", "task_vector", "sparse", "geometric"]
FAMILIES: tuple[str, ...] = typing.get_args(Family)
_SPECIAL = {"out_dtype", "generator", "module_class"}


class PerModel:
    """Marks a keyword parameter as per-model (`Annotated[Sequence[float], PerModel(default)]`)."""

    def __init__(self, default: Scalar | None = None) -> None:
        self.default = default

    def __class_getitem__(cls, item: Any) -> Any:
        """PerModel[float] is a required per-model float; PerModel[float, 1.0] defaults to 1.0."""
        kind, default = item if isinstance(item, tuple) else (item, None)
        return Annotated[Sequence[kind], cls(default)]


@dataclass(frozen=True)
class MethodSpec:
    """What the plan validator, the resolver and the search need to know about a method.

    model_params / shared_params: parameter defaults (None: required), from the signature.
    base: "required" (task-vector methods), "optional", or "none" (the base, if listed
        in `models`, is merged like any other model).
    family: what the search varies for it: "interpolation" (weights on a simplex, one λ
        per knot), "task_vector" (weights and a scale λ), "sparse" (those and a density),
        "geometric" (the method alone decides the mix).
    elementwise: each output element depends only on the inputs at the same position,
        so the merger may split big tensors into cache-sized chunks.
    mergekit: the method exists in mergekit under the same name with the same meaning.
    """

    name: str
    fn: MergeFn
    family: Family
    model_params: Mapping[str, Scalar | None] = field(default_factory=dict)
    shared_params: Mapping[str, Scalar | None] = field(default_factory=dict)
    base: Literal["required", "optional", "none"] = "required"
    min_models: int = 1
    max_models: int | None = None
    randomized: bool = False
    elementwise: bool = False
    needs_module_class: bool = False
    fused: bool = False
    mergekit: bool = True


METHODS: dict[str, MethodSpec] = {}


def register(fn: MergeFn, name: str, *, family: Family, base: Literal["required", "optional", "none"] = "required",
             min_models: int = 1, max_models: int | None = None, elementwise: bool = False,
             mergekit: bool = True) -> MethodSpec:
    """Register `fn` under `name`, its parameters read from its signature (module docstring)."""
    if name in METHODS:
        raise ValueError(f"merge method {name!r} is registered twice")
    if family not in FAMILIES:
        raise ValueError(f"{name}: family must be one of {', '.join(FAMILIES)}; got {family!r}")
    model_params, shared_params, special = _parameters(fn, name)
    spec = MethodSpec(name, fn, family, model_params, shared_params, base=base, min_models=min_models,
                      max_models=max_models, randomized="generator" in special, elementwise=elementwise,
                      needs_module_class="module_class" in special, fused="out_dtype" in special,
                      mergekit=mergekit)
    METHODS[name] = spec
    return spec


def _parameters(fn: MergeFn, name: str) -> tuple[dict[str, Scalar | None], dict[str, Scalar | None], set[str]]:
    inner, bound = (fn.func, fn.keywords) if isinstance(fn, functools.partial) else (fn, {})
    hints = typing.get_type_hints(inner, include_extras=True)
    own_defaults = {p.name: p.default for p in inspect.signature(inner).parameters.values()}
    model_params: dict[str, Scalar | None] = {}
    shared_params: dict[str, Scalar | None] = {}
    special: set[str] = set()
    for param in inspect.signature(fn).parameters.values():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if param.name in bound and own_defaults.get(param.name) is inspect.Parameter.empty:
            continue  # fixed by the variant
        if param.name in _SPECIAL:
            special.add(param.name)
            continue
        marker = _per_model_marker(hints.get(param.name))
        yaml_name = yaml_param(param.name)
        if marker is not None:
            model_params[yaml_name] = marker.default
        elif param.default is inspect.Parameter.empty:
            raise TypeError(f"{name}: shared parameter {param.name!r} needs a default in the signature")
        else:
            shared_params[yaml_name] = param.default
    return model_params, shared_params, special


def _per_model_marker(hint: Any) -> PerModel | None:
    """The PerModel marker of an annotation, also inside `X | None`."""
    candidates = [hint, *typing.get_args(hint)] if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
    for candidate in candidates:
        for meta in getattr(candidate, "__metadata__", ()):
            if isinstance(meta, PerModel):
                return meta
    return None


def get_method(name: str) -> MethodSpec:
    _load_builtin_methods()
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise KeyError(f"unknown merge method {name!r}; known methods: {known}") from None


def method_names(family: Family | None = None) -> list[str]:
    """Every registered method (of one family), sorted."""
    _load_builtin_methods()
    return sorted(n for n, spec in METHODS.items() if family is None or spec.family == family)


def python_name(param: str) -> str:
    """YAML parameter name -> keyword argument name (`lambda` is a Python keyword)."""
    return param + "_" if keyword.iskeyword(param) else param


def yaml_param(argument: str) -> str:
    """Keyword argument name -> YAML parameter name (`lambda_` -> `lambda`)."""
    return argument[:-1] if argument.endswith("_") and keyword.iskeyword(argument[:-1]) else argument


def _load_builtin_methods() -> None:
    import merging.methods  # noqa: F401  (importing registers every built-in method)
