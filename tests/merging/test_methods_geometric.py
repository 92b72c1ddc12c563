"""model_stock and karcher: hand-computed small cases, and parity with mergekit 0.1.5's
in-memory API on random float32 tensors (2-D and 1-D)."""

import math

import pytest
import torch

from merging.methods.karcher import karcher
from merging.methods.model_stock import model_stock
from merging.registry import METHODS

merge_state_dicts = pytest.importorskip("mergekit.merge_methods.api").merge_state_dicts

SHAPES = {"w": (7, 5), "b": (9,)}


def _state(seed: int, scale: float = 1.0, around: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (around[k] if around else 0) + scale * torch.randn(s, generator=g) for k, s in SHAPES.items()}


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-5, atol=1e-6)


# --- model_stock --------------------------------------------------------------------------

def test_model_stock_hand_computed():
    base = torch.tensor([1.0, 1.0])
    # offsets (2, 0) and (3, 3): cos = 1/√2, t = 2c / (1 + c), mean offset (2.5, 1.5)
    c = 1 / math.sqrt(2)
    t = 2 * c / (1 + c)
    out = model_stock([base + torch.tensor([2.0, 0.0]), base + torch.tensor([3.0, 3.0])], base)
    assert _close(out, base + t * torch.tensor([2.5, 1.5]))
    # orthogonal offsets: cos 0 → t 0 → the base
    assert _close(model_stock([base + torch.tensor([1.0, 0.0]), base + torch.tensor([0.0, 5.0])], base), base)
    # parallel offsets: cos 1 → t = N/N = 1 → the average
    models = [base + torch.tensor([1.0, 2.0]), base + torch.tensor([2.0, 4.0]), base + torch.tensor([3.0, 6.0])]
    assert _close(model_stock(models, base), base + torch.tensor([2.0, 4.0]))
    # opposite offsets (N = 2, cos −1): singular denominator → the base
    assert _close(model_stock([base + 1.0, base - 1.0], base), base)


def test_model_stock_filter_wise_is_per_row():
    base = torch.zeros(2, 2)
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    # row 0: orthogonal → t 0 (base); row 1: parallel → t 1 (average)
    assert _close(model_stock([a, b], base, filter_wise=True), torch.tensor([[0.0, 0.0], [1.5, 1.5]]))
    # whole tensor: offsets (1,0,1,1), (0,1,2,2): cos = 4/(√3·3), t = 2c/(1+c)
    c = 4 / (math.sqrt(3) * 3)
    assert _close(model_stock([a, b], base), (2 * c / (1 + c)) * (a + b) / 2)


def test_model_stock_needs_two_models():
    with pytest.raises(ValueError, match="at least 2"):
        model_stock([torch.ones(3)], torch.zeros(3))


@pytest.mark.parametrize("n_models", [2, 3, 4])
@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock_matches_mergekit(n_models, filter_wise):
    base = _state(0)
    # correlated fine-tunes (shared component + individual noise) so t is well inside (0, 1)
    shared = _state(1, 0.1, base)
    models = {f"m{i}": _state(10 + i, 0.1, shared) for i in range(n_models)}
    expected = merge_state_dicts({"base": base, **models}, "model_stock",
                                 parameters={"filter_wise": filter_wise}, base="base")
    for name in SHAPES:
        out = model_stock([m[name] for m in models.values()], base[name], filter_wise=filter_wise)
        assert _close(out, expected[name]), name


# --- karcher ------------------------------------------------------------------------------

def test_karcher_of_two_orthogonal_vectors_is_the_scaled_midpoint():
    x, y = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])
    # units e1, e2 → geodesic midpoint (1, 1)/√2, scaled by the mean norm (3 + 1)/2
    assert _close(karcher([x, y], None), 2.0 * torch.tensor([1.0, 1.0]) / math.sqrt(2))
    # weights 2:1 → the point 1/3 of the way along the arc (30°), scaled by (2·3 + 1)/3
    out = karcher([x, y], None, weight=[2.0, 1.0])
    expected = (7 / 3) * torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)])
    assert _close(out, expected)


def test_karcher_symmetric_and_degenerate_cases():
    eye = torch.eye(3)
    # three orthonormal axes, equal weights: the mean is (1, 1, 1)/√3 by symmetry, norm 1
    assert _close(karcher(list(eye), None), torch.ones(3) / math.sqrt(3))
    v = torch.tensor([1.0, -2.0, 0.5])
    assert _close(karcher([v, 2 * v], None), 1.5 * v)          # same direction: mean norm
    assert torch.equal(karcher([v], None), v)                  # a lone input is returned
    assert torch.equal(karcher([torch.zeros(3), torch.zeros(3)], None), torch.zeros(3))
    # a zero input takes no part in the direction but counts (as 0) in the norm
    assert _close(karcher([v, torch.zeros(3)], None), 0.5 * v)
    with pytest.raises(ValueError, match="sum to zero"):
        karcher([v, 2 * v], None, weight=[1.0, -1.0])


@pytest.mark.parametrize("n_models", [2, 3, 5])
def test_karcher_matches_mergekit(n_models):
    models = [_state(20 + i) for i in range(n_models)]
    expected = merge_state_dicts(models, "karcher")
    for name in SHAPES:
        tensors = [m[name] for m in models]
        assert _close(karcher(tensors, None), expected[name]), name
        assert _close(karcher(tensors, None, weight=[2.5] * n_models), expected[name]), name


def test_karcher_matches_mergekit_near_parallel_and_with_a_zero_input():
    base = _state(0)
    models = [_state(30 + i, 0.05, base) for i in range(3)]   # fine-tunes of one base
    models.append({k: torch.zeros(s) for k, s in SHAPES.items()})
    params = {"max_iter": 25, "tol": 1e-6}
    expected = merge_state_dicts(models, "karcher", parameters=params)
    for name in SHAPES:
        out = karcher([m[name] for m in models], None, max_iter=25, tol=1e-6)
        assert _close(out, expected[name]), name


def test_registered_specs():
    spec = METHODS["model_stock"]
    assert spec.fn is model_stock and spec.base == "required" and spec.min_models == 2 and spec.mergekit
    assert dict(spec.shared_params) == {"filter_wise": False} and not spec.model_params
    spec = METHODS["karcher"]
    assert spec.fn is karcher and spec.base == "none" and spec.mergekit
    assert dict(spec.shared_params) == {"max_iter": 10, "tol": 1e-5}
    assert dict(spec.model_params) == {"weight": 1.0}
