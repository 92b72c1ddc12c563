"""ties, dare_*, della*, breadcrumbs*, merging/selection.py and merging/sparsifiers.py.

Hand-computed merges of two 6-element task vectors (values in eighths, so every expected
number is exact), exact-count selection with ties, DELLA's keep probabilities, statistical
properties of the random methods, and parity with mergekit 0.1.5 (the peer) on random
tensors.
"""

from __future__ import annotations

import math

import pytest
import torch

from merging.keep_rules import RankWindow, TopK, prime_at_least
from merging.methods.breadcrumbs import breadcrumbs, breadcrumbs_ties
from merging.methods.dare import dare_linear, dare_ties
from merging.methods.della import della, della_linear
from merging.methods.task_arithmetic import task_arithmetic
from merging.methods.ties import ties
from merging.registry import METHODS
from merging.selection import SAMPLE_BOUNDS, magnitude_at_rank
from merging.sparsifiers import bernoulli, della_magprune, magnitude, magnitude_outliers
from merging.task_vectors import della_keep_probabilities, della_rank_norm, sparsify

B = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
T1 = torch.tensor([0.5, -0.25, 0.0, 1.0, -0.125, 0.375])     # |T1| ranks: 2 < 4 < 1 < 5 < 0 < 3
T2 = torch.tensor([-0.75, 0.5, -0.25, 0.25, 0.125, -0.625])  # |T2|: 4 < 2 = 3 < 1 < 5 < 0
X, Y = B + T1, B + T2


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- hand-computed

def test_ties_hand_computed():
    # density 0.5 keeps 3 of 6: T̂1 = [.5, 0, 0, 1, 0, .375], T̂2 = [-.75, .5, 0, 0, 0, -.625].
    # Unit weights: Σ = [-.25, .5, 0, 1, 0, -.25] → γ = [−, +, +, +, +, −] (0 counts as +);
    # agreeing: T̂2 at 0, 1, 5 and T̂1 at 3, one model each (D = 1; D = 0 → 1 elsewhere).
    out = ties([X, Y], B, weight=[1.0, 1.0], density=[0.5, 0.5])
    assert torch.equal(out, B + torch.tensor([-0.75, 0.5, 0.0, 1.0, 0.0, -0.625]))
    # Weights [2, 1]: Σ = [.25, .5, 0, 2, 0, .125] → all +; agreeing: 2·T̂1 at 0, 3, 5 and T̂2
    # at 1; D = [2, 1, 1, 2, 1, 2].
    out = ties([X, Y], B, weight=[2.0, 1.0], density=[0.5, 0.5])
    assert torch.equal(out, B + torch.tensor([0.5, 0.5, 0.0, 1.0, 0.0, 0.375]))
    out = ties([X, Y], B, weight=[2.0, 1.0], density=[0.5, 0.5], normalize=False, lambda_=0.5)
    assert torch.equal(out, B + 0.5 * torch.tensor([1.0, 0.5, 0.0, 2.0, 0.0, 0.75]))


def test_ties_rescale_hand_computed():
    # L1: T1 2.25 → kept 1.875 (×1.2); T2 2.5 → kept 1.875 (×4/3). Signs as in the unit case.
    out = ties([X, Y], B, weight=[1.0, 1.0], density=[0.5, 0.5], rescale=True)
    assert torch.allclose(out, B + torch.tensor([-1.0, 2 / 3, 0.0, 1.2, 0.0, -0.625 * 4 / 3]), atol=1e-6)
    out = ties([X, Y], B, weight=[1.0, 1.0], density=[0.5, 0.5], rescale=True, rescale_norm="inverse_density")
    assert torch.equal(out, B + torch.tensor([-1.5, 1.0, 0.0, 2.0, 0.0, -1.25]))
    # rescale_norm is inert without rescale, but a typo is still an error
    assert torch.equal(ties([X, Y], B, weight=[1.0, 1.0], density=[0.5, 0.5], rescale_norm="inverse_density"),
                       ties([X, Y], B, weight=[1.0, 1.0], density=[0.5, 0.5]))
    with pytest.raises(ValueError, match="rescale_norm"):
        ties([X, Y], B, weight=[1.0, 1.0], density=[0.5, 0.5], rescale_norm="l2")


def test_breadcrumbs_hand_computed():
    # density 0.5, gamma 0.2 on n = 6: keep 3, drop int(1.2) = 1 outlier, n_bot = 2: ascending
    # ranks [2, 5). T1: ranks 2, 3, 4 = indices 1, 5, 0. T2 ascending is 4, 2, 3, 1, 5, 0 (the
    # tie 0.25 at indices 2 and 3 goes by index): indices 3, 1, 5.
    assert torch.equal(magnitude_outliers(T1, 0.5, 0.2), torch.tensor([0.5, -0.25, 0.0, 0.0, 0.0, 0.375]))
    assert torch.equal(magnitude_outliers(T2, 0.5, 0.2), torch.tensor([0.0, 0.5, 0.0, 0.25, 0.0, -0.625]))
    kw = dict(weight=[1.0, 0.5], density=[0.5, 0.5], gamma=[0.2, 0.2])
    linear_mix = torch.tensor([0.5, 0.0, 0.0, 0.125, 0.0, 0.0625])  # T̂1 + T̂2 / 2
    assert torch.equal(breadcrumbs([X, Y], B, **kw), B + linear_mix)
    assert torch.allclose(breadcrumbs([X, Y], B, **kw, normalize=True), B + linear_mix / 1.5)
    # ties: Σ = [.5, 0, 0, .125, 0, .0625] → all +; agreeing T̂1 at 0, 5 and T̂2 / 2 at 1, 3.
    assert torch.equal(breadcrumbs_ties([X, Y], B, **kw), B + torch.tensor([0.5, 0.25, 0.0, 0.125, 0.0, 0.375]))
    assert torch.equal(breadcrumbs_ties([X, Y], B, **kw, normalize=True),
                       B + torch.tensor([0.5, 0.5, 0.0, 0.25, 0.0, 0.375]))  # D = [1, .5, 1, .5, 1, 1]


def test_breadcrumbs_window_shrinks_outlier_cut_to_meet_density():
    x = torch.tensor([0.1, -0.9, 0.3, 0.5, -0.2, 0.7, 0.05, -0.6, 0.4, 0.8])
    # keep 5, drop the largest 1 → ascending ranks [4, 9) = 0.4, 0.5, 0.6, 0.7, 0.8
    assert torch.equal(magnitude_outliers(x, 0.5, 0.1), torch.tensor([0, 0, 0, 0.5, 0, 0.7, 0, -0.6, 0.4, 0.8]))
    # density 0.8 + gamma 0.5 > 1: n_bot = max(0, 10 − 8 − 5) = 0 → only the 2 largest go
    assert torch.equal(magnitude_outliers(x, 0.8, 0.5), torch.tensor([0.1, 0, 0.3, 0.5, -0.2, 0.7, 0.05, -0.6, 0.4, 0]))
    assert torch.equal(magnitude_outliers(x, 1.0, 0.5), x)  # density ≥ 1: unchanged, gamma ignored (mergekit)
    assert torch.equal(magnitude_outliers(x, 0.05, 0.1), torch.zeros(10))  # int(0.5) = 0 kept


def test_dare_hand_computed_at_density_one_and_drop_structure():
    # density 1 drops nothing: dare_linear is task arithmetic, dare_ties is sign election on
    # T1 + T2 = [-.25, .25, -.25, 1.25, 0, -.25]; at index 4 the sum is 0, counted as +.
    g = seeded(0)
    assert torch.equal(dare_linear([X, Y], B, weight=[1.0, 0.5], density=[1.0, 1.0], generator=g),
                       B + T1 + 0.5 * T2)
    mixed = torch.tensor([-0.75, 0.5, -0.25, 1.25, 0.125, -0.625])
    assert torch.equal(dare_ties([X, Y], B, weight=[1.0, 1.0], density=[1.0, 1.0], generator=g), B + mixed)
    assert torch.equal(dare_ties([X, Y], B, weight=[1.0, 1.0], density=[1.0, 1.0], normalize=True, generator=g),
                       B + torch.tensor([-0.75, 0.5, -0.25, 0.625, 0.125, -0.625]))
    # density 0.5 with the paper's rescale: every entry is dropped or doubled
    out = dare_linear([X], B, weight=[1.0], density=[0.5], rescale_norm="inverse_density", generator=seeded(3))
    dropped, doubled = out == B, out == B + 2 * T1
    assert bool((dropped | doubled).all()) and bool(doubled[T1 != 0].any())
    # mergekit's L1 rescale: the kept entries are scaled by ‖T1‖₁ / ‖kept‖₁
    out = dare_linear([X], B, weight=[1.0], density=[0.5], generator=seeded(3))
    kept = doubled & (T1 != 0)
    factor = T1.abs().sum() / T1[kept].abs().sum()
    assert torch.allclose(out, B + torch.where(kept, T1 * factor, 0.0))


def test_della_hand_computed():
    # Within the row, |x| = .1, .4, .2, .3 have ranks 0, 3, 1, 2 → p = .4 + .2·rank/3.
    x = torch.tensor([0.1, -0.4, 0.2, 0.3])
    p = della_keep_probabilities(x, density=0.5, epsilon=0.1)
    assert torch.allclose(p, torch.tensor([0.4, 0.6, 0.4 + 0.2 / 3, 0.4 + 0.4 / 3]))
    # per row of a matrix (mergekit ranks along dim 1)
    p2 = della_keep_probabilities(torch.stack([x, -x.flip(0)]), density=0.5, epsilon=0.1)
    assert torch.allclose(p2[1], p.flip(0))
    # density 1 keeps everything: della is TIES without trimming (normalize defaults to true)
    g = seeded(0)
    assert torch.equal(della([X, Y], B, weight=[1.0, 1.0], density=[1.0, 1.0], epsilon=[0.1, 0.1], generator=g),
                       B + torch.tensor([-0.75, 0.5, -0.25, 0.625, 0.125, -0.625]))
    assert torch.equal(della_linear([X, Y], B, weight=[1.0, 0.5], density=[1.0, 1.0], epsilon=[0.1, 0.1],
                                    generator=g), B + T1 + 0.5 * T2)
    # inverse_density divides each survivor by its own keep probability
    out = della_linear([X], B, weight=[1.0], density=[0.5], epsilon=[0.1], rescale_norm="inverse_density",
                       generator=seeded(5))
    pt = della_keep_probabilities(T1, 0.5, 0.1)
    ok = torch.isclose(out, B) | torch.isclose(out, B + T1 / pt)
    assert bool(ok.all())


def test_della_epsilon_must_keep_probabilities_inside_unit_interval():
    with pytest.raises(ValueError, match=r"density ± epsilon .*density=0\.1, epsilon=0\.15"):
        della([X, Y], B, weight=[1.0, 1.0], density=[0.1, 0.5], epsilon=[0.15, 0.15], generator=seeded(0))
    with pytest.raises(ValueError, match=r"density=0\.9, epsilon=0\.1"):
        della_magprune(T1, 0.9, 0.1)
    # density 0 and 1 short-circuit before the check, as in mergekit
    assert torch.equal(della_magprune(T1, 1.0, 0.5), T1)
    assert torch.equal(della_magprune(T1, 0.0, 0.5), torch.zeros(6))


# --------------------------------------------------------------------------- exact selection

def test_magnitude_keeps_exact_count_with_ties_in_index_order():
    x = torch.tensor([0.5, -0.5, 0.5, 0.25, -0.5, 1.0])
    # k = 3: 1.0, then two of the four 0.5s, the first two by index
    assert torch.equal(magnitude(x, 0.5), torch.tensor([0.5, -0.5, 0.0, 0.0, 0.0, 1.0]))
    assert torch.equal(magnitude(x, 0.01), torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))  # at least one
    assert torch.equal(magnitude(x, 1.0), x) and torch.equal(magnitude(x, 0.0), torch.zeros(6))


@pytest.mark.parametrize("n", [1000, 300_007])  # direct kthvalue, and sample-bracketed selection
def test_rank_windows_match_a_stable_sort(n):
    g = seeded(n)
    x = torch.randint(-40, 41, (n,), generator=g).float() / 8  # heavy ties, zeros included
    mags = x.abs()
    desc = torch.sort(mags, descending=True, stable=True).indices
    asc = torch.sort(mags, stable=True).indices
    for frac in (0.001, 0.3, 0.77):
        k = int(frac * n)
        sel = magnitude_at_rank(x, None, k)
        assert sel.value == float(mags[asc[k - 1]]) and sel.n_less == int((mags < sel.value).sum())
        assert sel.n_equal == int((mags == sel.value).sum())
        expected = torch.zeros(n)
        expected[desc[:k]] = x[desc[:k]]
        assert torch.equal(sparsify(x, TopK((k + 0.5) / n)), expected)
        start, stop = k // 3, k
        expected = torch.zeros(n)
        expected[asc[start:stop]] = x[asc[start:stop]]
        got = sparsify(x, RankWindow((stop - start + 0.5) / n, (n - stop + 0.5) / n))
        assert torch.equal(got, expected)
        # the count is exact even though most kept entries tie with dropped ones
        nonzero_expected = int((x[asc[start:stop]] != 0).sum())
        assert int((got != 0).sum()) == nonzero_expected


def test_selection_brackets_big_tensors_and_survives_a_sample_that_misses(monkeypatch):
    sizes = []
    kthvalue = torch.kthvalue
    monkeypatch.setattr(torch, "kthvalue", lambda t, k: sizes.append(t.numel()) or kthvalue(t, k))
    n = 400_000
    x = torch.rand(n, generator=seeded(0))
    assert magnitude_at_rank(x, None, n // 2).value == float(kthvalue(x, n // 2).values)
    assert sizes[-1] < n // 10  # only part of the bracket went through kthvalue
    # Structured data: the sampled positions (a fixed prime stride) hold huge values, so the
    # bracket is wrong; it must widen to what the sample cannot see and stay exact.
    low, high = SAMPLE_BOUNDS
    stride = prime_at_least(n // min(max(n // 256, low), high))  # the sampling stride for n
    x[stride // 2 :: stride] += 1e6
    for k in (1, n // 2, n - n // stride - 3, n - 3):
        sel = magnitude_at_rank(x, None, k)
        assert sel.value == float(kthvalue(x, k).values) and sel.n_less == int((x < sel.value).sum())
    assert max(sizes[1:]) > n // 2  # the missed bracket widened to most of the tensor
    # heavy ties (bf16-like deltas): counts settle t without extracting anything
    sizes.clear()
    y = torch.randint(0, 6, (n,), generator=seeded(1)).float()
    for k in (1, 70_000, n // 2, n):
        sel = magnitude_at_rank(y, None, k)
        assert sel.value == float(kthvalue(y, k).values)
        assert (sel.n_less, sel.n_equal) == (int((y < sel.value).sum()), int((y == sel.value).sum()))
    assert sizes == []


# --------------------------------------------------------------------------- DELLA ranks

def _mergekit_rank_norm(mags: torch.Tensor) -> torch.Tensor:
    ranks = torch.argsort(torch.argsort(mags, dim=1), dim=1).float() + 1
    lo, hi = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    return (ranks - lo) / (hi - lo)


def test_della_ranks_are_exact_when_no_two_magnitudes_share_a_bin():
    # Magnitudes 2^(k/8): neighbours differ by 9 %, more than a bin spans (1/16 of a binade),
    # and 128 of them span 16 binades, all within a row's 256 bins.
    g = seeded(1)
    mags = torch.stack([2.0 ** (torch.randperm(128, generator=g).float() / 8) for _ in range(7)])
    assert torch.equal(della_rank_norm(mags), _mergekit_rank_norm(mags))
    assert torch.equal(della_rank_norm(mags[:, :5]), _mergekit_rank_norm(mags[:, :5]))


def test_della_ranks_share_the_mean_rank_within_a_bin():
    rows = torch.tensor([[0.5, 0.5, 0.25, 1.0],      # a tie: ranks 1 and 2 → 1.5 each
                         [1.0, 1.01, 2.0, 0.25],     # 1.0 and 1.01 share a bin (< 1 + 1/16)
                         [1e-9, 2e-9, 1.0, 0.5]])    # more than 16 binades below the top: bin 0
    want = torch.tensor([[1.5, 1.5, 0, 3], [1.5, 1.5, 3, 0], [0.5, 0.5, 3, 2]]) / 3
    assert torch.equal(della_rank_norm(rows), want)
    assert torch.equal(della_rank_norm(torch.ones(4, 1)), torch.full((4, 1), 0.5))
    # continuous data: close to the exact ranks, and every row's mean rank is exactly 1/2
    long = torch.randn(3, 10_000, generator=seeded(2)).abs()
    ranks = della_rank_norm(long)
    assert float((ranks - _mergekit_rank_norm(long)).abs().max()) < 0.02
    assert torch.allclose(ranks.double().mean(dim=1), torch.full((3,), 0.5, dtype=torch.float64), atol=1e-6)


def test_della_keep_frequencies_follow_the_probabilities():
    # 20000 rows, each a permutation-free copy of the same 5 magnitudes: per column the keep
    # rate must be p = .3 + .4·rank/4 within 5 binomial standard deviations.
    rows = 20_000
    x = torch.tensor([0.3, -0.1, 0.5, 0.2, -0.4]).repeat(rows, 1)
    kept = (della_magprune(x, 0.5, 0.2, seed=7) != 0).float().mean(dim=0)
    p = torch.tensor([0.5, 0.3, 0.7, 0.4, 0.6])
    assert bool(((kept - p).abs() < 5 * torch.sqrt(p * (1 - p) / rows)).all())


def test_della_inverse_density_is_unbiased():
    # E[m·τ/p] = τ entry by entry, p being each entry's own keep probability.
    g = seeded(0)
    base, tau = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    p = della_keep_probabilities(tau, 0.3, 0.2)
    seeds, total = 400, torch.zeros(1000)
    for seed in range(seeds):
        total += della_linear([base + tau], base, weight=[1.0], density=[0.3], epsilon=[0.2],
                              rescale_norm="inverse_density", generator=seeded(seed)) - base
    z = (total / seeds - tau) / (tau.abs() * torch.sqrt((1 - p) / (p * seeds)))
    assert float(z.abs().max()) < 5 and abs(float(z.mean())) < 5 / math.sqrt(1000)


def test_della_mask_does_not_depend_on_the_rescale_and_3d_tensors_rank_along_dim_1():
    x = torch.randn(6, 5000, generator=seeded(3))
    a = della_magprune(x, 0.5, 0.25, "l1", seed=11)
    b = della_magprune(x, 0.5, 0.25, "inverse_density", seed=11)
    assert torch.equal(a != 0, b != 0) and 0.4 < float((a != 0).float().mean()) < 0.6
    x3 = torch.randn(3, 50, 4, generator=seeded(4))  # 3-D: ranked along dim 1, like mergekit
    p = della_keep_probabilities(x3, 0.5, 0.1)
    assert torch.allclose(p[1, :, 2], della_keep_probabilities(x3[1, :, 2], 0.5, 0.1))


# --------------------------------------------------------------------------- properties

def test_ties_with_one_model_and_density_one_is_task_arithmetic():
    g = seeded(0)
    base, model = torch.randn(40, 30, generator=g), torch.randn(40, 30, generator=g)
    for normalize in (False, True):
        got = ties([model], base, weight=[0.7], density=[1.0], normalize=normalize, lambda_=1.3)
        want = task_arithmetic([model], base, weight=[0.7], normalize=normalize, lambda_=1.3)
        assert torch.allclose(got, want, atol=1e-6)


def test_dare_is_reproducible_per_seed():
    g = seeded(0)
    base = torch.randn(50, 20, generator=g)
    models = [base + torch.randn(50, 20, generator=g) for _ in range(2)]
    for fn in (dare_linear, dare_ties):
        kw = dict(weight=[0.6, 0.4], density=[0.3, 0.6])
        a, b = fn(models, base, **kw, generator=seeded(42)), fn(models, base, **kw, generator=seeded(42))
        c = fn(models, base, **kw, generator=seeded(43))
        assert torch.equal(a, b) and not torch.equal(a, c)
    kw = dict(weight=[0.6, 0.4], density=[0.3, 0.6], epsilon=[0.1, 0.2])
    assert torch.equal(della(models, base, **kw, generator=seeded(1)), della(models, base, **kw, generator=seeded(1)))


def test_dare_inverse_density_is_unbiased():
    # E[m·τ/p] = τ. Over 400 seeds each entry's mean has sd |τ|·√((1−p)/(p·400)); every
    # standardized error must be below 5, and their average (1000 entries) below 5/√1000.
    g = seeded(0)
    base, tau = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    p, seeds = 0.3, 400
    total = torch.zeros(1000)
    for seed in range(seeds):
        total += dare_linear([base + tau], base, weight=[1.0], density=[p], rescale_norm="inverse_density",
                             generator=seeded(seed)) - base
    z = (total / seeds - tau) / (tau.abs() * math.sqrt((1 - p) / (p * seeds)))
    assert float(z.abs().max()) < 5 and abs(float(z.mean())) < 5 / math.sqrt(1000)


def test_density_zero_gives_the_base_and_density_one_keeps_everything():
    g = seeded(0)
    kw = dict(weight=[1.0, 1.0], density=[0.0, 0.0])
    assert torch.equal(ties([X, Y], B, **kw), B)
    assert torch.equal(breadcrumbs_ties([X, Y], B, **kw, gamma=[0.1, 0.1]), B)
    assert torch.equal(dare_linear([X, Y], B, **kw, generator=g), B)
    assert torch.equal(della([X, Y], B, **kw, epsilon=[0.1, 0.1], generator=g), B)
    assert torch.equal(bernoulli(T1, 0.0), torch.zeros(6)) and torch.equal(bernoulli(T1, 1.0), T1)
    assert torch.equal(breadcrumbs([X, Y], B, weight=[1.0, 0.5], density=[1.0, 1.0], gamma=[0.5, 0.5]),
                       B + T1 + 0.5 * T2)
    assert torch.equal(ties([X, Y], B, weight=[1.0, 1.0], density=[1.0, 1.0]),
                       B + torch.tensor([-0.75, 0.5, -0.25, 0.625, 0.125, -0.625]))


def test_registration_matches_mergekit_defaults():
    shared = {"ties": (True, False), "dare_ties": (False, True), "dare_linear": (False, True),
              "breadcrumbs": (False, False), "breadcrumbs_ties": (False, False), "della": (True, True),
              "della_linear": (False, True)}
    for name, (normalize, rescale) in shared.items():
        spec = METHODS[name]
        assert dict(spec.shared_params) == {"normalize": normalize, "rescale": rescale,
                                            "lambda": 1.0, "rescale_norm": "l1"}, name
        assert spec.model_params["weight"] is None and spec.model_params["density"] == 1.0
        assert spec.base == "required" and spec.randomized == name.startswith(("dare", "della"))
    assert METHODS["breadcrumbs"].model_params["gamma"] == 0.01 and METHODS["della"].model_params["epsilon"] == 0.15


# --------------------------------------------------------------------------- mergekit parity

def _mergekit(method: str, base: torch.Tensor, models: list[torch.Tensor], per_model: dict, shared: dict):
    api = pytest.importorskip("mergekit.merge_methods.api")
    inputs = {"base": {"w": base}} | {f"m{i}": {"w": m} for i, m in enumerate(models)}
    params = dict(shared) | {k: {f"m{i}": v for i, v in enumerate(vals)} for k, vals in per_model.items()}
    return api.merge_state_dicts(inputs, method, parameters=params, base="base")["w"]


PARITY_FNS = {"ties": ties, "breadcrumbs": breadcrumbs, "breadcrumbs_ties": breadcrumbs_ties}


@pytest.mark.parametrize("method", sorted(PARITY_FNS))
def test_deterministic_methods_match_mergekit(method):
    # Deltas are large relative to the base's rounding step, so magnitudes are distinct
    # (mergekit's unstable sort then has no ties to break differently).
    g = seeded(sorted(PARITY_FNS).index(method))
    base = 0.02 * torch.randn(64, 48, generator=g)
    models = [base + 0.01 * torch.randn(64, 48, generator=g) for _ in range(3)]
    cases = [
        ([0.5, 0.5, 0.5], [1.0, 1.0, 1.0], {}),
        ([0.3, 0.5, 0.9], [1.0, 0.5, 0.3], {"normalize": True, "lambda": 0.7}),
        ([0.1, 1.0, 0.7], [0.7, -0.4, 1.2], {"normalize": False, "rescale": True, "lambda": 1.3}),
        ([0.2, 0.6, 0.05], [1.0, 1.0, 0.0], {"normalize": True, "rescale": True, "int8_mask": True}),
        ([0.9, 0.25, 0.5], [0.2, 0.3, 0.5], {"normalize": False, "rescale": False}),
    ]
    for density, weight, shared in cases:
        per = {"weight": weight, "density": density}
        if method.startswith("breadcrumbs"):
            per["gamma"] = [0.05, 0.01, 0.2]
        want = _mergekit(method, base, models, per, shared)
        kwargs = {("lambda_" if k == "lambda" else k): v for k, v in shared.items() if k != "int8_mask"}
        got = PARITY_FNS[method](models, base, **per, **kwargs)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (density, weight, shared)


def test_ties_matches_mergekit_on_a_tensor_big_enough_for_sampled_selection():
    g = seeded(9)
    base = torch.zeros(600, 500)  # zero base: deltas keep all their bits, magnitudes are distinct
    models = [0.01 * torch.randn(600, 500, generator=g) for _ in range(2)]
    per = {"weight": [0.6, 0.4], "density": [0.2, 0.7]}
    want = _mergekit("ties", base, models, per, {"rescale": True})
    assert torch.allclose(ties(models, base, **per, rescale=True), want, rtol=1e-5, atol=1e-6)
    per["gamma"] = [0.01, 0.05]
    want = _mergekit("breadcrumbs_ties", base, models, per, {})
    assert torch.allclose(breadcrumbs_ties(models, base, **per), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties", "della", "della_linear"])
def test_random_methods_match_mergekit_at_density_one(method):
    g = seeded(3)
    base = 0.02 * torch.randn(64, 48, generator=g)
    models = [base + 0.01 * torch.randn(64, 48, generator=g) for _ in range(3)]
    per = {"weight": [0.6, -0.3, 0.9], "density": [1.0, 1.0, 1.0]}
    if method.startswith("della"):
        per["epsilon"] = [0.1, 0.1, 0.1]
    fn = {"dare_linear": dare_linear, "dare_ties": dare_ties, "della": della, "della_linear": della_linear}[method]
    for shared in ({}, {"normalize": True, "lambda": 0.8}):
        want = _mergekit(method, base, models, per, shared)
        kwargs = {("lambda_" if k == "lambda" else k): v for k, v in shared.items() if k != "int8_mask"}
        got = fn(models, base, **per, **kwargs, generator=seeded(0))
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), shared


def test_dare_matches_mergekit_in_distribution():
    # Same density, different random streams: compare statistics of the merged delta.
    g = seeded(4)
    base = torch.zeros(300, 300)
    model = torch.randn(300, 300, generator=g)
    torch.manual_seed(0)  # mergekit draws from the global generator
    want = _mergekit("dare_linear", base, [model], {"weight": [1.0], "density": [0.3]}, {})
    got = dare_linear([model], base, weight=[1.0], density=[0.3], generator=seeded(0))
    for out in (want, got):
        kept = out != 0
        assert abs(float(kept.float().mean()) - 0.3) < 0.01  # sd of the rate: 0.0015
        assert torch.allclose(out.abs().sum(), model.abs().sum(), rtol=1e-5)  # L1 rescale
