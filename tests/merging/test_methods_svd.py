"""tsvm and r_tsvm against hand-computed merges of task matrices with known SVDs.

Task matrices are built from orthonormal vectors (axis vectors, or the columns of a seeded
random orthogonal matrix) and chosen singular values, so every expected merge is written
out explicitly here.
"""

import math

import pytest
import torch

from merging.methods.task_arithmetic import task_arithmetic
from merging.methods.tsvm import energy_rank, r_tsvm, rank_cap, tsvm
from merging.registry import METHODS

NO_CLIP = 1e9  # an outlier_c so large that nothing is clipped


def _orthonormal(n: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return q.float()


def _diag(values: list[float], shape: tuple[int, int]) -> torch.Tensor:
    out = torch.zeros(shape)
    for i, v in enumerate(values):
        out[i, i] = v
    return out


def _base(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return a.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-5, atol=atol)


def _literal_tsvm(tensors, base, weight, k, lam):
    """The paper's algorithm verbatim, in float64, with torch.linalg.svd."""
    us, ss, vs = [], [], []
    for t, w in zip(tensors, weight):
        u, s, vh = torch.linalg.svd((t - base).double(), full_matrices=False)
        us.append(u[:, :k]), ss.append(w * s[:k]), vs.append(vh[:k])
    p, _, q = torch.linalg.svd(torch.cat(us, 1), full_matrices=False)
    u = p @ q
    p, _, q = torch.linalg.svd(torch.cat(vs, 0), full_matrices=False)
    vh = p @ q
    return (base.double() + lam * (u * torch.cat(ss)) @ vh).float()


# --- tsvm ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 9), (9, 6)])
def test_tsvm_one_task_full_rank_reconstructs_it(shape):
    base = _base(shape)
    task = base + _base(shape, 1)
    out = tsvm([task], base, weight=[2.0], lambda_=0.25, rank_fraction=1.0)
    assert _close(out, base + 0.5 * (task - base))
    assert out.is_contiguous() and out.shape == shape
    assert _close(tsvm([task], base, weight=[1.0]), task)  # rank_fraction defaults to 1/T = 1


def test_tsvm_truncates_each_task_to_its_top_k():
    base = _base((3, 4))
    task = base + _diag([5.0, 3.0, 1.0], (3, 4))
    # one task, ρ = 2/3: k = ⌊2/3 · 3⌋ = 2 → σ = 1 is dropped
    assert _close(tsvm([task], base, weight=[1.0], rank_fraction=2 / 3), base + _diag([5.0, 3.0], (3, 4)))
    # ρ tiny still keeps one direction: k = max(1, ⌊0.01 · 3⌋) = 1
    assert _close(tsvm([task], base, weight=[1.0], rank_fraction=0.01), base + _diag([5.0], (3, 4)))


def test_tsvm_overlapping_rank_one_tasks_hand_computed():
    # Δ1 = 3 e1 e1ᵀ, Δ2 = 2 a aᵀ with a at 45°. k = 1 each (ρ = 1/2 of r = 2). The polar factor
    # of [e1, a] is the symmetric (Löwdin) orthogonalisation: both columns rotate apart about
    # the bisector (22.5°) to ±45° from it, i.e. to −22.5° and 67.5°; the same for V.
    base = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    a = torch.tensor([math.sqrt(0.5), math.sqrt(0.5)])
    e1 = torch.tensor([1.0, 0.0])
    p = torch.tensor([math.cos(math.radians(-22.5)), math.sin(math.radians(-22.5))])
    q = torch.tensor([math.cos(math.radians(67.5)), math.sin(math.radians(67.5))])
    tasks = [base + 3 * torch.outer(e1, e1), base + 2 * torch.outer(a, a)]
    expected = base + 0.5 * (3 * 2.0 * torch.outer(p, p) + 2 * 0.5 * torch.outer(q, q))
    assert _close(tsvm(tasks, base, weight=[2.0, 0.5], lambda_=0.5), expected)
    # plain task arithmetic would have added along the shared direction instead
    assert not _close(task_arithmetic(tasks, base, weight=[2.0, 0.5], lambda_=0.5), expected)


@pytest.mark.parametrize("rank_fraction", [None, 1.0])
def test_tsvm_orthogonal_tasks_equal_task_arithmetic(rank_fraction):
    # row spaces and column spaces mutually orthogonal: no interference to remove
    u, v = _orthonormal(5, 1), _orthonormal(7, 2)
    base = _base((5, 7))
    d1 = 2.0 * torch.outer(u[:, 0], v[:, 0]) + 0.7 * torch.outer(u[:, 1], v[:, 1])
    d2 = 3.0 * torch.outer(u[:, 2], v[:, 3])
    tasks, weight = [base + d1, base + d2], [0.5, 2.0]
    out = tsvm(tasks, base, weight=weight, lambda_=1.5, rank_fraction=rank_fraction)
    assert _close(out, base + 1.5 * (0.5 * d1 + 2.0 * d2))
    assert _close(out, task_arithmetic(tasks, base, weight=weight, lambda_=1.5))


def test_tsvm_identical_tasks_merge_to_one_truncated_copy():
    # U = [U_k, U_k] → polar [U_k, U_k]/√2 (and V alike): the two copies add up to one
    base = _base((4, 6))
    task = base + _diag([4.0, 3.0, 2.0, 1.0], (4, 6))
    assert _close(tsvm([task, task], base, weight=[1.0, 1.0]), base + _diag([4.0, 3.0], (4, 6)))


def test_tsvm_zero_and_zero_weight_tasks_take_no_part():
    base = _base((4, 6))
    task = base + _diag([4.0, 3.0, 2.0, 1.0], (4, 6))
    other = base + _base((4, 6), 5)
    top2 = base + _diag([4.0, 3.0], (4, 6))                 # k = ⌊4/2⌋ = 2
    assert _close(tsvm([task, base.clone()], base, weight=[1.0, 1.0]), top2)
    assert _close(tsvm([task, other], base, weight=[1.0, 0.0]), top2)
    assert torch.equal(tsvm([base.clone()], base, weight=[1.0]), base)


@pytest.mark.parametrize("shape,rank_fraction", [((12, 20), None), ((20, 12), 0.25), ((16, 16), 0.5)])
def test_tsvm_matches_the_literal_algorithm(shape, rank_fraction):
    base = _base(shape)
    tasks = [base + 0.1 * _base(shape, s) for s in (1, 2, 3)]
    weight = [1.0, 0.5, 1.5]
    k = max(1, int((rank_fraction or 1 / 3) * min(shape)))
    expected = _literal_tsvm(tasks, base, weight, k, 0.8)
    out = tsvm(tasks, base, weight=weight, lambda_=0.8, rank_fraction=rank_fraction)
    assert _close(out, expected, atol=1e-4)
    assert _close(tsvm([t.T for t in tasks], base.T, weight=weight, lambda_=0.8, rank_fraction=rank_fraction),
                  out.T, atol=1e-6)


@pytest.mark.parametrize("method", [tsvm, r_tsvm])
def test_non_matrix_tensors_fall_back_to_task_arithmetic(method):
    base = torch.tensor([1.0, 2.0, 3.0, 4.0])
    tasks = [torch.tensor([2.0, 2.0, 1.0, 4.0]), torch.tensor([0.0, 4.0, 3.0, 0.0])]
    # deltas [1,0,−2,0] and [−1,2,0,−4]; 1.0·d1 + 0.5·d2 = [0.5, 1, −2, −2]
    out = method(tasks, base, weight=[1.0, 0.5], lambda_=2.0)
    assert _close(out, base + 2.0 * torch.tensor([0.5, 1.0, -2.0, -2.0]))
    cube = _base((2, 3, 4))
    cube_tasks = [cube + _base((2, 3, 4), s) for s in (1, 2)]
    assert _close(method(cube_tasks, cube, weight=[1.0, 1.0]),
                  task_arithmetic(cube_tasks, cube, weight=[1.0, 1.0]))


def test_tsvm_rejects_bad_rank_fraction():
    base = _base((3, 3))
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="rank_fraction"):
            tsvm([base + 1], base, weight=[1.0], rank_fraction=bad)


# --- r_tsvm -------------------------------------------------------------------------------

def test_energy_rank_on_a_designed_spectrum():
    sigma = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)  # σ² = 16, 4, 1, 0.25; Σ = 21.25
    assert energy_rank(sigma, 0.7) == 1    # 16 ≥ 14.875
    assert energy_rank(sigma, 0.9) == 2    # 16 < 19.125 ≤ 20
    assert energy_rank(sigma, 0.98) == 3   # 20 < 20.825 ≤ 21
    assert energy_rank(sigma, 0.99) == 4   # 21 < 21.0375
    assert energy_rank(sigma, 1.0) == 4
    assert energy_rank(torch.zeros(3, dtype=torch.float64), 0.9) == 0


@pytest.mark.parametrize("energy,kept", [(0.7, [4.0]), (0.9, [4.0, 2.0]), (0.98, [4.0, 2.0, 1.0]),
                                         (1.0, [4.0, 2.0, 1.0, 0.5])])
def test_r_tsvm_energy_rank_selection(energy, kept):
    base = _base((4, 5))
    task = base + _diag([4.0, 2.0, 1.0, 0.5], (4, 5))
    out = r_tsvm([task], base, weight=[1.0], energy=energy, outlier_c=NO_CLIP)
    assert _close(out, base + _diag(kept, (4, 5)))


def test_rank_cap_limits_the_dense_tasks():
    assert rank_cap([3, 3], 4) == 2          # 2 + 2 ≤ 4 < 3 + 3
    assert rank_cap([1, 4], 4) == 3          # 1 + 3 ≤ 4: the sparse task keeps its one direction
    assert rank_cap([5, 5, 5], 2) == 1       # more tasks than directions: at least one each
    assert rank_cap([2, 1], 8) == 2          # no cap needed


def test_r_tsvm_caps_total_rank_at_min_dimension():
    # Two tasks sharing all 3 row directions, each needing 3 at energy 1; r = 3 → cap c = 1:
    # each keeps its top direction (e1 f1ᵀ with σ 5, and e2 f2ᵀ with σ 6 — orthogonal).
    base = _base((3, 4))
    t1 = base + _diag([5.0, 2.0, 1.0], (3, 4))
    t2 = base + torch.tensor([[2.0, 0, 0, 0], [0, 6.0, 0, 0], [0, 0, 1.0, 0]])
    out = r_tsvm([t1, t2], base, weight=[1.0, 1.0], energy=1.0, outlier_c=NO_CLIP, balance=0.0)
    assert _close(out, base + _diag([5.0, 6.0], (3, 4)))


def test_r_tsvm_clips_outlier_singular_values():
    base = _base((5, 6))
    task = base + _diag([100.0, 5.0, 4.0, 3.0, 2.0], (5, 6))
    # median 4, |σ − 4| = [96, 1, 0, 1, 2] → MAD 1, bound 4 + 3·1 = 7
    out = r_tsvm([task], base, weight=[1.0], energy=1.0, outlier_c=3.0)
    assert _close(out, base + _diag([7.0, 5.0, 4.0, 3.0, 2.0], (5, 6)))
    # c = 0 clips at the median
    out = r_tsvm([task], base, weight=[1.0], energy=1.0, outlier_c=0.0)
    assert _close(out, base + _diag([4.0, 4.0, 4.0, 3.0, 2.0], (5, 6)))
    # even count: median (4 + 3)/2 = 3.5, |σ − 3.5| = [6.5, .5, .5, 2.5] → MAD 1.5, bound 8
    task = base + _diag([10.0, 4.0, 3.0, 1.0], (5, 6))
    out = r_tsvm([task], base, weight=[1.0], energy=1.0, outlier_c=3.0)
    assert _close(out, base + _diag([8.0, 4.0, 3.0, 1.0], (5, 6)))


def test_r_tsvm_balances_task_norms():
    # orthogonal rank-1 tasks with norms 4 and 1; mean norm 2.5 → scales 0.625 and 2.5
    u, v = _orthonormal(4, 3), _orthonormal(6, 4)
    base = _base((4, 6))
    d1, d2 = 4.0 * torch.outer(u[:, 0], v[:, 0]), torch.outer(u[:, 1], v[:, 1])
    tasks = [base + d1, base + d2]
    out = r_tsvm(tasks, base, weight=[2.0, 1.0], lambda_=0.5, energy=1.0)
    assert _close(out, base + 0.5 * (2.0 * 0.625 * d1 + 2.5 * d2))
    out = r_tsvm(tasks, base, weight=[2.0, 1.0], lambda_=0.5, energy=1.0, balance=0.5)
    assert _close(out, base + 0.5 * (2.0 * math.sqrt(0.625) * d1 + math.sqrt(2.5) * d2))
    out = r_tsvm(tasks, base, weight=[2.0, 1.0], lambda_=0.5, energy=1.0, balance=0.0)
    assert _close(out, task_arithmetic(tasks, base, weight=[2.0, 1.0], lambda_=0.5))


def test_r_tsvm_single_task_keeping_everything_reconstructs_it():
    base = _base((7, 5))
    task = base + _base((7, 5), 9)
    assert _close(r_tsvm([task], base, weight=[1.0], energy=1.0, outlier_c=NO_CLIP), task)
    assert torch.equal(r_tsvm([base.clone()], base, weight=[1.0]), base)


def test_r_tsvm_rejects_bad_parameters():
    base = _base((3, 3))
    with pytest.raises(ValueError, match="energy"):
        r_tsvm([base + 1], base, weight=[1.0], energy=0.0)
    with pytest.raises(ValueError, match="outlier_c"):
        r_tsvm([base + 1], base, weight=[1.0], outlier_c=-1.0)


def test_registered_specs():
    spec = METHODS["tsvm"]
    assert spec.fn is tsvm and spec.base == "required" and not spec.mergekit and not spec.elementwise
    assert dict(spec.model_params) == {"weight": 1.0}
    assert dict(spec.shared_params) == {"lambda": 1.0, "rank_fraction": None}
    spec = METHODS["r_tsvm"]
    assert spec.fn is r_tsvm and spec.base == "required" and not spec.mergekit
    assert dict(spec.shared_params) == {"lambda": 1.0, "energy": 0.9, "outlier_c": 3.0, "balance": 1.0}
