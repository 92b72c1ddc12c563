"""The compiled merge path (torch.compile of merging/kernels.py) against the same code run eagerly.

Compiled and eager run the same torch functions, so without an L1 rescale the results
must be bit-identical; with it the two sum ‖δ‖₁ in different orders (one fused reduction,
or chunk by chunk), so results agree to a rounding of the rescale factor. Selection is
checked against torch.kthvalue on data built to hit each branch: continuous values, heavy
ties (deltas of bf16 checkpoints), and samples that miss.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from merging import Merger, compile as compile_policy, kernels, parse_plan
from merging.finite import NonFiniteMergeError
from merging.keep_rules import model_seed, uniform_draws
from merging.methods.breadcrumbs import breadcrumbs, breadcrumbs_ties
from merging.methods.dare import dare_linear, dare_ties
from merging.methods.della import della, della_linear
from merging.methods.linear import linear
from merging.methods.multislerp import multislerp, nuslerp
from merging.methods.slerp import alignment_slerp, slerp
from merging.methods.task_arithmetic import task_arithmetic
from merging.methods.ties import ties
from merging.selection import TIE_BLOCK, magnitude_at_rank, magnitudes_at_ranks, tie_cut, tie_cuts

pytestmark = pytest.mark.skipif(compile_policy.compiler_missing("cpu") is not None,
                                reason="no C++ compiler for torch.compile")

SHAPE = (384, 512)  # 196,608 elements: several eager chunks, one compiled call


def family(dtype: torch.dtype, seed: int = 0, n_models: int = 3, shape=SHAPE):
    """A base and fine-tunes: base + a small delta, rounded to `dtype` (bf16: heavily tied deltas)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g) * 0.02
    models = [(base + 0.002 * torch.randn(shape, generator=g)).to(dtype) for _ in range(n_models)]
    return base.to(dtype), models


@pytest.fixture
def both_paths(monkeypatch):
    """Call as both_paths(fn, *args, **kwargs) -> (compiled result, eager result)."""
    def run(fn, *args, **kwargs):
        results = []
        for mode in ("1", "0"):
            with monkeypatch.context() as m:
                m.setenv("SOUPSEARCH_COMPILE", mode)
                if "generator" in kwargs:
                    kwargs["generator"] = seeded(kwargs["generator"].initial_seed())
                results.append(fn(*args, **kwargs))
        return tuple(results)
    return run


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


EXACT_CASES = {
    "ties": (ties, dict(weight=[1.0, 0.7, -0.4], density=[0.3, 0.55, 0.8])),
    "ties_unnormalized": (ties, dict(weight=[0.5, 0.5, 1.0], density=[0.2, 0.2, 0.9], normalize=False, lambda_=1.3)),
    "ties_inverse_density": (ties, dict(weight=[1.0, 1.0, 1.0], density=[0.4, 0.4, 0.4], rescale=True,
                                        rescale_norm="inverse_density")),
    "dare_linear": (dare_linear, dict(weight=[0.6, 0.4, 0.3], density=[0.3, 0.5, 0.9], rescale=False)),
    "dare_ties": (dare_ties, dict(weight=[1.0, 1.0, 1.0], density=[0.3, 0.3, 0.3], rescale_norm="inverse_density",
                                  normalize=True)),
    "breadcrumbs": (breadcrumbs, dict(weight=[0.5, 0.5, 0.5], density=[0.3, 0.5, 0.9], gamma=[0.01, 0.1, 0.05])),
    "breadcrumbs_ties": (breadcrumbs_ties, dict(weight=[1.0, 0.8, 0.6], density=[0.3, 0.3, 0.95],
                                                gamma=[0.0, 0.2, 0.1], normalize=True)),
    "della": (della, dict(weight=[1.0, 0.8, 0.6], density=[0.3, 0.5, 0.7], epsilon=[0.1, 0.2, 0.25],
                          rescale_norm="inverse_density")),
    "della_linear": (della_linear, dict(weight=[0.6, 0.4, 0.3], density=[0.4, 0.5, 0.6], epsilon=[0.3, 0.1, 0.2],
                                        rescale=False)),
}
RANDOMIZED = (dare_linear, dare_ties, della, della_linear)


@pytest.mark.parametrize("case", sorted(EXACT_CASES))
def test_compiled_merge_is_bit_identical_to_eager(case, both_paths):
    fn, kwargs = EXACT_CASES[case]
    base, models = family(torch.bfloat16, seed=sum(map(ord, case)))
    if fn in RANDOMIZED:
        kwargs = dict(kwargs, generator=seeded(11))
    # Each configuration compiles once (seconds): the cases alternate the output dtype.
    out_dtype = torch.bfloat16 if sorted(EXACT_CASES).index(case) % 2 else torch.float32
    got, want = both_paths(fn, models, base, out_dtype=out_dtype, **kwargs)
    assert got.dtype == want.dtype == out_dtype
    assert torch.equal(got, want), f"{case} -> {out_dtype}: {int((got != want).sum())} values differ"
    assert not torch.equal(got.float(), base.float())


def test_other_stored_dtypes_merge_alike_on_both_paths(both_paths):
    base, models = family(torch.float16, seed=3)
    got, want = both_paths(ties, models, base, weight=[1.0, 0.5, 0.5], density=[0.3, 0.3, 0.6], out_dtype=torch.float16)
    assert got.dtype == torch.float16 and torch.equal(got, want)
    base, models = family(torch.float32, seed=3)
    got, want = both_paths(dare_ties, models, base, weight=[1.0, 0.5, 0.5], density=[0.3, 0.3, 0.6], rescale=False,
                           generator=seeded(4), out_dtype=torch.float32)
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_linear_and_task_arithmetic_are_bit_identical(dtype, both_paths):
    base, models = family(dtype, seed=1)
    got, want = both_paths(linear, models, None, weight=[0.2, 0.5, 0.3], out_dtype=dtype)
    assert torch.equal(got, want)
    got, want = both_paths(task_arithmetic, models, base, weight=[1.0, -0.5, 0.25], lambda_=0.8,
                           out_dtype=torch.float32)
    assert torch.equal(got, want)
    expected = base.float() + 0.8 * sum(w * (m.float() - base.float()) for w, m in zip([1.0, -0.5, 0.25], models))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_slerp_family_is_two_passes_that_agree_with_the_formulas_on_both_paths(dtype, both_paths):
    """slerp, alignment_slerp, nuslerp and multislerp compute dot products in one pass and
    combine in another: compiled and eager sum the dot products in different orders, so the
    coefficients (and the results) agree to float32 rounding, against the formulas in float64."""
    base, (x1, x2, x3) = family(dtype, seed=6)
    b, d1, d2 = base.double(), x1.double() - base.double(), x2.double() - base.double()

    def angle(u: torch.Tensor, v: torch.Tensor) -> float:
        return math.acos(float(u.flatten() @ v.flatten() / (u.norm() * v.norm())))

    def two_point(t: float, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        omega = angle(u, v)
        return (math.sin((1 - t) * omega) * u + math.sin(t * omega) * v) / math.sin(omega)

    cases = [
        (slerp, ([x1], base), dict(t=0.3), two_point(0.3, b, x1.double())),
        (alignment_slerp, ([x1, x2], base), dict(t=0.3), b + two_point(0.3, d1, d2)),
        (nuslerp, ([x1, x2], base), dict(weight=[1.0, 3.0]), b + two_point(0.75, d1, d2)),
        (multislerp, ([x1, x2], base), dict(weight=[1.0, 1.0]), None),
        (multislerp, ([x1, x2, x3], base), dict(weight=[1.0, 2.0, 1.0]), None),
    ]
    for fn, args, kwargs, expected in cases:
        got, want = both_paths(fn, *args, **kwargs, out_dtype=torch.float32)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
        if expected is not None:
            torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)
    # two unit-norm-weighted orthogonal-ish task vectors: multislerp of a pair is its SLERP midpoint
    got, _ = both_paths(multislerp, [x1, x2], base, weight=[1.0, 1.0], out_dtype=torch.float32)
    n1, n2 = float(d1.norm()), float(d2.norm())
    u1, u2 = d1 / n1, d2 / n2
    m = (u1 + u2) / (u1 + u2).norm()
    torch.testing.assert_close(got.double(), b + m * (n1 + n2) / 2, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fn,kwargs", [
    (ties, dict(weight=[1.0, 0.5], density=[0.3, 0.6], rescale=True)),
    (dare_linear, dict(weight=[1.0, 0.5], density=[0.3, 0.6])),  # mergekit's default: L1 rescale
    (della, dict(weight=[1.0, 0.5], density=[0.3, 0.6], epsilon=[0.1, 0.2])),  # likewise
])
def test_l1_rescale_agrees_up_to_the_sum_order(fn, kwargs, both_paths):
    base, models = family(torch.float32, seed=5, n_models=2)
    if fn in RANDOMIZED:
        kwargs = dict(kwargs, generator=seeded(2))
    got, want = both_paths(fn, models, base, **kwargs)
    # The same entries are kept; the factors differ in their last bits at most.
    assert torch.equal(got != base, want != base)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_ties_keeps_exactly_k_when_the_threshold_is_heavily_tied(both_paths):
    # Integer deltas: a few distinct magnitudes, each shared by ~1/9 of the entries, so the
    # k-th magnitude is tied thousands of times and the cut falls inside the ties.
    g = torch.Generator().manual_seed(3)
    base = torch.zeros(SHAPE)
    models = [torch.randint(-4, 5, SHAPE, generator=g).float() for _ in range(2)]
    n = base.numel()
    for density in (0.1, 0.3, 0.5, 0.77):
        got, want = both_paths(ties, models, base, weight=[1.0, 0.0], density=[density, density], normalize=False)
        assert int(torch.count_nonzero(got)) == int(density * n)  # model 1 has weight 0: model 0's trim alone
        assert torch.equal(got, want)
        # the ties at the threshold are kept from the lowest index on
        t = float(got.abs()[got != 0].min())
        kept_ties = ((got.abs() == t)).view(-1).nonzero().view(-1)
        all_ties = (models[0].abs() == t).view(-1).nonzero().view(-1)
        assert torch.equal(kept_ties, all_ties[: kept_ties.numel()])


@pytest.mark.parametrize("compiled", ["1", "0"])
def test_ranks_of_several_models_are_resolved_together(compiled, monkeypatch):
    """Every model's ranks, near each other (two ranks between the same pivots share one
    gathered interval) and far apart, from one counting pass and one gathering pass."""
    monkeypatch.setenv("SOUPSEARCH_COMPILE", compiled)
    g = torch.Generator().manual_seed(11)
    n = 1 << 18
    b = torch.randn(n, generator=g)
    xs = [b + torch.randn(n, generator=g) * s for s in (0.1, 1.0, 3.0)]
    ranks = [[n // 2, n // 2 + 3], [17, n - 40_000], [n // 5]]
    got = magnitudes_at_ranks(xs, b, ranks)
    for x, rs, ths in zip(xs, ranks, got):
        mags = (x - b).abs()
        for rank, th in zip(rs, ths):
            t = float(torch.kthvalue(mags, rank).values)
            assert (th.value, th.n_less, th.n_equal) == (t, int((mags < t).sum()), int((mags == t).sum()))


@pytest.mark.parametrize("data", ["continuous", "tied", "some_ties", "spike", "sorted"])
def test_magnitude_at_rank_matches_kthvalue(data):
    g = torch.Generator().manual_seed(7)
    n = 1 << 18
    b = torch.zeros(n)
    if data == "continuous":
        x = torch.randn(n, generator=g)
    elif data == "tied":  # few distinct values: every one in the bracket is a pivot
        x = torch.randint(-6, 7, (n,), generator=g).float()
    elif data == "some_ties":  # ~130 copies of each value: t is tied but no pivot
        x = torch.randint(-1000, 1001, (n,), generator=g).float()
    elif data == "spike":  # 90% zeros: the sample sees mostly one value
        x = torch.where(torch.rand(n, generator=g) < 0.9, 0.0, torch.randn(n, generator=g))
    else:  # ordered data: an evenly strided sample is not random
        x = torch.linspace(0, 1, n) ** 3
    mags = x.abs()
    for k in [1, 17, n // 3, n // 2, n - 5, n]:
        th = magnitude_at_rank(x, b, k)
        t = float(torch.kthvalue(mags, k).values)
        assert th.value == t
        assert th.n_less == int((mags < t).sum()) and th.n_equal == int((mags == t).sum())
        positions = (mags == t).nonzero().view(-1)
        for need in {1, th.n_equal // 2 + 1, th.n_equal}:
            want = n if need >= th.n_equal or t == 0.0 else int(positions[need - 1]) + 1
            assert tie_cut(x, b, th, need) == want


def test_tie_cuts_of_several_models_in_one_pass_follow_index_order(both_paths):
    # Few distinct magnitudes (every threshold is tied) and a partial last block: cuts in
    # the first block, mid-tensor and in the tail, for three models at once.
    g = torch.Generator().manual_seed(3)
    n = 16 * TIE_BLOCK + 1234
    b = torch.randint(-3, 4, (n,), generator=g).float()
    xs = [b + torch.randint(-4, 5, (n,), generator=g).float() for _ in range(3)]
    requests, want = [], []
    for m, x in enumerate(xs):
        mags = (x - b).abs()
        for rank in (n // 5, n // 2, n - 3):
            th = magnitude_at_rank(x, b, rank)
            positions = (mags == th.value).nonzero().view(-1)
            for need in (1, th.n_equal // 2, th.n_equal - 1, th.n_equal):
                requests.append((m, th, need))
                want.append(n if need >= th.n_equal or th.value == 0.0 else int(positions[need - 1]) + 1)
    assert any(w > 16 * TIE_BLOCK and w < n for w in want)  # a cut in the partial block is tested
    compiled, eager = both_paths(tie_cuts, xs, b, requests)
    assert compiled == want and eager == want


def test_della_table_is_the_rank_formula_on_both_paths():
    g = torch.Generator().manual_seed(5)
    counts = torch.randint(0, 9, (300, kernels.DELLA_BINS), generator=g)
    row_len = int(counts.sum(dim=1).max())
    density, epsilon = 0.4, 0.15
    # the bin's mean normalized rank (2·below + count − 1) / (2(L − 1)), in float64
    ranks = (2 * (counts.cumsum(1) - counts) + counts - 1).double() * (1.0 / (2.0 * (row_len - 1)))
    want = (ranks * (2 * epsilon) + (density - epsilon)).float()
    args = [torch.tensor(v, dtype=torch.float64) for v in (1.0 / (2.0 * (row_len - 1)), 2 * epsilon, density - epsilon)]
    assert torch.equal(kernels.della_table(counts, *args), want)
    assert torch.equal(compile_policy.compiled_kernel(kernels.della_table)(counts, *args), want)


def test_draws_are_counter_based_and_masks_match_them(both_paths):
    n = 5000
    u = uniform_draws(1234, 0, n)
    assert u.min() >= 0 and u.max() < 1 and abs(float(u.mean()) - 0.5) < 0.02
    assert torch.equal(uniform_draws(1234, 100, 50), u[100:150])  # counter-based: position only
    # The mask for density p keeps exactly the entries with u < p, on both paths.
    x = torch.ones(1 << 17)
    for kept in both_paths(dare_linear, [x], torch.zeros_like(x), weight=[1.0], density=[0.3], rescale=False,
                           generator=seeded(9)):
        assert torch.equal(kept != 0, uniform_draws(model_seed(9, 0), 0, x.numel()) < 0.3)


def test_packed_draw_bits_give_every_model_its_own_draws(both_paths):
    """With an L1 rescale the L1 pass writes each drawn model's keep bit into one int8 mask
    (7 models at most) and the mix reads it; models past the seventh draw again. Either way
    model m keeps exactly the entries its own counter-based draws keep, rescaled by
    ‖δ‖₁/‖keep(δ)‖₁ (n / #kept for a constant delta), on both paths."""
    n, k = 1 << 16, 9
    base = torch.zeros(n)
    models = [torch.full((n,), float(m + 1)) for m in range(k)]
    density = [0.2 + 0.05 * m for m in range(k)]
    got, want = both_paths(dare_linear, models, base, weight=[1.0] * k, density=density, generator=seeded(5))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    expected = torch.zeros(n, dtype=torch.float64)
    for m in range(k):
        keep = uniform_draws(model_seed(5, m), 0, n) < density[m]
        expected += torch.where(keep, (m + 1) * n / float(keep.sum()), 0.0)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-5)


def test_result_does_not_depend_on_the_thread_count_or_chunking(monkeypatch):
    base, models = family(torch.bfloat16, seed=8)
    threads = torch.get_num_threads()
    results = []
    monkeypatch.setenv("SOUPSEARCH_COMPILE", "1")
    try:
        for t in (1, threads):
            torch.set_num_threads(t)
            results.append(ties(models, base, weight=[1.0, 1.0, 1.0], density=[0.3, 0.3, 0.3], out_dtype=torch.bfloat16))
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("SOUPSEARCH_COMPILE", "0")
    monkeypatch.setattr(compile_policy, "CHUNK_ELEMENTS", 12_345)
    results.append(ties(models, base, weight=[1.0, 1.0, 1.0], density=[0.3, 0.3, 0.3], out_dtype=torch.bfloat16))
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_more_models_than_three():
    base, models = family(torch.bfloat16, seed=4, n_models=6)
    want = sum(m.float() for m in models) / 6
    got = linear(models, None, weight=[1.0] * 6, out_dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    got_ties = ties(models, base, weight=[1.0] * 6, density=[1.0] * 6)
    deltas = torch.stack([m.float() - base.float() for m in models])
    sign = torch.where(deltas.sum(0) >= 0, 1.0, -1.0)
    agree = (deltas * sign > 0).float()
    want_ties = base.float() + (deltas * agree).sum(0) / agree.sum(0).clamp(min=1)
    torch.testing.assert_close(got_ties, want_ties, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["1", "0"])
def test_non_finite_results_are_caught(mode, monkeypatch):
    monkeypatch.setenv("SOUPSEARCH_COMPILE", mode)
    base, models = family(torch.bfloat16, seed=2, n_models=2)
    big = [(m.float() * 1e4).to(torch.bfloat16) for m in models]  # deltas of ~20: 3e38 · 20 overflows
    with pytest.raises(NonFiniteMergeError):
        ties(big, base, weight=[3e38, 3e38], density=[0.5, 0.5], normalize=False, out_dtype=torch.bfloat16)
    with pytest.raises(NonFiniteMergeError):  # finite in float32, inf once stored as float16
        linear([m.float() * 1e6 for m in models], None, weight=[10.0, 10.0], normalize=False,
               out_dtype=torch.float16)


def test_merger_names_the_tensor_when_a_merge_overflows():
    base, models = family(torch.bfloat16, seed=2, n_models=1)
    m = Merger({"base": {"w.weight": base}, "a": {"w.weight": (models[0].float() * 1e4).bfloat16()}}, base="base")
    plan = parse_plan({"merge_method": "ties", "base_model": "base", "dtype": "bfloat16",
                       "models": [{"model": "a", "parameters": {"weight": 3e38, "density": 0.5}}],
                       "parameters": {"normalize": False}}, "ties")
    with pytest.raises(NonFiniteMergeError, match=r"ties: merged tensor w\.weight contains NaN or inf"):
        m.merge_to_dict(plan)


@pytest.mark.parametrize("shape", [(7, 1000), (3, 5, 40)])
def test_della_rows_of_any_shape_merge_alike_on_both_paths(shape, both_paths):
    base, models = family(torch.float32, seed=12, n_models=2, shape=shape)
    got, want = both_paths(della, models, base, weight=[1.0, 1.0], density=[0.4, 0.6], epsilon=[0.2, 0.1],
                           rescale_norm="inverse_density", generator=seeded(5))
    assert got.shape == shape and torch.equal(got, want)


def test_without_a_compiler_merges_run_eagerly_with_one_warning(monkeypatch):
    code = ("import warnings, torch; warnings.simplefilter('always');"
            "from merging.methods.ties import ties;"
            "b = torch.zeros(1 << 17); x = torch.randn(1 << 17, generator=torch.Generator().manual_seed(0));"
            "print(float(ties([x], b, weight=[1.0], density=[0.5]).abs().sum()))")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, CXX="no-such-compiler"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("run eagerly") == 1
    monkeypatch.setenv("SOUPSEARCH_COMPILE", "1")
    b, x = torch.zeros(1 << 17), torch.randn(1 << 17, generator=torch.Generator().manual_seed(0))
    assert proc.stdout.splitlines()[-1] == str(float(ties([x], b, weight=[1.0], density=[0.5]).abs().sum()))
