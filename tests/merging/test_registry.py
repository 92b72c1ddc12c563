"""A method's metadata comes from its signature: per-model vs shared parameters, their
defaults, and the fused/randomized/module-class capabilities."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import pytest
import torch

from merging import method_names
from merging.registry import METHODS, PerModel, register


@pytest.fixture
def registered():
    """Names registered by a test are removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        METHODS.pop(name, None)


def _made_up(tensors: Sequence[torch.Tensor], base: torch.Tensor, *, mode: str, weight: PerModel[float],
             density: PerModel[float, 0.5], lambda_: float = 2.0, flag: bool = False,
             out_dtype: torch.dtype | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    return base


def test_parameters_and_capabilities_come_from_the_signature(registered):
    registered += ["test_made_up", "test_made_up_b"]
    spec = register(partial(_made_up, mode="a"), "test_made_up", family="sparse")
    assert dict(spec.model_params) == {"weight": None, "density": 0.5}  # None: required
    assert dict(spec.shared_params) == {"lambda": 2.0, "flag": False}  # `mode` is fixed by the variant
    assert spec.fused and spec.randomized and not spec.needs_module_class
    # A keyword the partial binds over an existing default is that variant's new default.
    spec_b = register(partial(_made_up, mode="b", flag=True), "test_made_up_b", family="sparse")
    assert spec_b.shared_params["flag"] is True
    assert "test_made_up" in method_names(family="sparse") and "test_made_up" not in method_names("interpolation")


def test_a_shared_parameter_without_default_and_an_unknown_family_are_refused(registered):
    def no_default(tensors, base, *, t: float) -> torch.Tensor:
        return base

    with pytest.raises(TypeError, match="shared parameter 't' needs a default"):
        register(no_default, "test_no_default", family="interpolation")
    with pytest.raises(ValueError, match="family must be one of"):
        register(_made_up, "test_bad_family", family="magic")  # type: ignore[arg-type]
    registered.append("test_twice")
    register(partial(_made_up, mode="a"), "test_twice", family="sparse")
    with pytest.raises(ValueError, match="registered twice"):
        register(partial(_made_up, mode="a"), "test_twice", family="sparse")


def test_builtin_families_match_what_the_search_varies():
    assert method_names(family="sparse") == sorted(
        ["ties", "dare_linear", "dare_ties", "della", "della_linear", "breadcrumbs", "breadcrumbs_ties"])
    assert set(method_names(family="interpolation")) == {"linear", "slerp", "alignment_slerp", "nuslerp",
                                                         "multislerp", "karcher"}
    assert all(METHODS[m].model_params.get("density") == 1.0 for m in method_names(family="sparse"))
    assert METHODS["della"].shared_params["normalize"] and not METHODS["della_linear"].shared_params["normalize"]
