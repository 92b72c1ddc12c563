"""linear, task_arithmetic, slerp, alignment_slerp, nuslerp, multislerp against hand-computed tensors."""

import math

import pytest
import torch

from merging.methods.linear import linear
from merging.methods.multislerp import multislerp, nuslerp
from merging.methods.slerp import alignment_slerp, slerp
from merging.methods.task_arithmetic import task_arithmetic

B = torch.tensor([1.0, 2.0, 3.0, 4.0])
X = torch.tensor([2.0, 2.0, 1.0, 4.0])
Y = torch.tensor([0.0, 4.0, 3.0, 0.0])


def test_linear_hand_computed():
    assert torch.allclose(linear([X, Y], None, weight=[3.0, 1.0]), torch.tensor([1.5, 2.5, 1.5, 3.0]))
    assert torch.allclose(linear([X, Y], None, weight=[3.0, 1.0], normalize=False), torch.tensor([6.0, 10.0, 6.0, 12.0]))
    assert torch.equal(linear([X, Y], None, weight=[1.0, 0.0]), X)  # [1, 0] gives model 1
    with pytest.raises(ValueError, match="sum to zero"):
        linear([X, Y], None, weight=[1.0, -1.0])


def test_task_arithmetic_hand_computed():
    # deltas: X−B = [1,0,−2,0], Y−B = [−1,2,0,−4]
    out = task_arithmetic([X, Y], B, weight=[1.0, 0.5], lambda_=2.0)
    assert torch.allclose(out, B + 2.0 * torch.tensor([0.5, 1.0, -2.0, -2.0]))
    out = task_arithmetic([X, Y], B, weight=[1.0, 0.5], normalize=True)
    assert torch.allclose(out, B + torch.tensor([0.5, 1.0, -2.0, -2.0]) / 1.5)
    assert torch.allclose(task_arithmetic([X], B, weight=[1.0]), X)


def test_slerp_endpoints_and_orthogonal_midpoint():
    assert torch.allclose(slerp([Y], X, t=0.0), X) and torch.allclose(slerp([Y], X, t=1.0), Y)
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp([e1], e0, t=0.5)  # Ω = π/2: sin(π/4)/sin(π/2) each
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    third = slerp([3 * e1], e0, t=1 / 3)  # coefficients sin(π/3), sin(π/6) on unnormalized inputs
    assert torch.allclose(third, torch.tensor([math.sin(math.pi / 3), 3 * math.sin(math.pi / 6)]))


def test_slerp_near_collinear_falls_back_to_lerp():
    v = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(slerp([2 * v + 1e-4], v, t=0.25), torch.lerp(v, 2 * v + 1e-4, 0.25))


def test_alignment_slerp_on_alignment_vectors():
    base = torch.tensor([1.0, 1.0])
    m1, m2 = base + torch.tensor([2.0, 0.0]), base + torch.tensor([0.0, 1.0])  # d1 ⟂ d2, Ω = π/2
    out = alignment_slerp([m1, m2], base, t=0.5)
    c = math.sin(math.pi / 4)
    assert torch.allclose(out, base + torch.tensor([2 * c, c]))
    assert torch.allclose(alignment_slerp([m1, m2], base, t=0.0), m1)
    assert torch.allclose(alignment_slerp([m1, m2], base, t=1.0), m2)


def test_alignment_slerp_lerps_norm_layers_by_default():
    base = torch.tensor([1.0, 1.0])
    m1, m2 = base + torch.tensor([2.0, 0.0]), base + torch.tensor([0.0, 1.0])
    lerp = alignment_slerp([m1, m2], base, t=0.5, module_class="norm")
    assert torch.allclose(lerp, base + torch.tensor([1.0, 0.5]))
    spherical = alignment_slerp([m1, m2], base, t=0.5, module_class="norm", lerp_norms=False)
    assert torch.allclose(spherical, alignment_slerp([m1, m2], base, t=0.5, module_class="q"))


def test_nuslerp_weights_set_t_and_base_uses_task_vectors():
    e0, e1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # weights 1:3 → t = 0.75
    out = nuslerp([e0, e1], None, weight=[1.0, 3.0])
    assert torch.allclose(out, torch.tensor([[math.sin(math.pi / 8), math.sin(3 * math.pi / 8)]]))
    base = torch.tensor([[5.0, 5.0]])
    assert torch.allclose(nuslerp([base + e0, base + e1], base, weight=[1.0, 3.0]), base + out)


def test_multislerp_orthogonal_pair_and_single_model():
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    out = multislerp([e0, e1], None, weight=[1.0, 1.0])
    # m = (1,1)/√2, tangents ±(1,−1)/2 cancel → m·cos 0 · mean norm 1.5
    assert torch.allclose(out, torch.tensor([1.5, 1.5]) / math.sqrt(2), atol=1e-6)
    assert torch.equal(multislerp([e0], None, weight=[1.0]), e0)



def test_multislerp_with_cancelling_directions_falls_back_to_the_barycentre():
    """Seen on the trained example family: a norm element moved +1 ulp by one variant, −1 ulp
    by another and not at all by the third. The unit directions sum to zero, so m is undefined;
    the merge is the weighted mean of the task vectors instead of an error that fails the trial."""
    base = torch.tensor([1.0, 1.0])
    d = torch.tensor([0.5, 0.0])
    out = multislerp([base + d, base - d, base.clone()], base, weight=[1.0, 1.0, 1.0])
    assert torch.equal(out, base)
    # unequal norms, balancing weights: Σ w u = ½e0 − ½e0 = 0 → ½·e0 + ½·(−2e0) = −½e0
    e0 = torch.tensor([1.0, 0.0])
    out = multislerp([e0, -2 * e0], None, weight=[1.0, 1.0])
    assert torch.allclose(out, torch.tensor([-0.5, 0.0]))


def test_multislerp_of_a_tensor_no_source_moved_is_the_base():
    """A layer every fine-tune left frozen has zero task vectors: the merge keeps the base."""
    base = torch.tensor([0.5, -1.0, 2.0])
    assert torch.equal(multislerp([base.clone(), base.clone(), base.clone()], base, weight=[1.0, 2.0, 1.0]), base)
