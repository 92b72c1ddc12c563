"""The fused CPU kernels (merging/native) against the torch code they replace.

Without rescaling, both paths do the same float operations in the same order, so the
results must be bit-identical; with the L1 rescale the two sum ‖δ‖₁ in different orders,
so results agree to a rounding of the rescale factor. Selection is checked against
torch.kthvalue on data built to hit each branch: continuous values, heavy ties (deltas of
bf16 checkpoints), and samples that miss.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from merging import sparsify
from merging.finite import NonFiniteMergeError
from merging.keep_rules import model_seed, uniform_draws
from merging.methods.breadcrumbs import breadcrumbs, breadcrumbs_ties
from merging.methods.dare import dare_linear, dare_ties
from merging.methods.della import della, della_linear
from merging.methods.linear import linear
from merging.methods.task_arithmetic import task_arithmetic
from merging.methods.ties import ties
from merging.native import available, ops
from merging.native import task_vectors as native

pytestmark = pytest.mark.skipif(not available(), reason="no C compiler: the native kernels are not built")

SHAPE = (384, 512)  # 196,608 elements: above ops.MIN_ELEMENTS, three 64K blocks (two threads' ranges)


def family(dtype: torch.dtype, seed: int = 0, n_models: int = 3, shape=SHAPE):
    """A base and fine-tunes: base + a small delta, rounded to `dtype` (bf16: heavily tied deltas)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g) * 0.02
    models = [(base + 0.002 * torch.randn(shape, generator=g)).to(dtype) for _ in range(n_models)]
    return base.to(dtype), models


@pytest.fixture
def torch_path(monkeypatch):
    """Call to run the next merge on torch (the reference)."""
    def run(fn, *args, **kwargs):
        with monkeypatch.context() as m:
            m.setattr(ops, "MIN_ELEMENTS", 1 << 62)
            return fn(*args, **kwargs)
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
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_native_merge_is_bit_identical_to_torch(case, dtype, torch_path):
    fn, kwargs = EXACT_CASES[case]
    base, models = family(dtype, seed=sum(map(ord, case)))
    if fn in RANDOMIZED:
        kwargs = dict(kwargs, generator=seeded(11))
    for out_dtype in (dtype, torch.float32):
        got = fn(models, base, out_dtype=out_dtype, **kwargs)
        if "generator" in kwargs:
            kwargs["generator"] = seeded(11)
        want = torch_path(fn, models, base, out_dtype=out_dtype, **kwargs)
        if "generator" in kwargs:
            kwargs["generator"] = seeded(11)
        assert got.dtype == want.dtype == out_dtype
        assert torch.equal(got, want), f"{case} {dtype}->{out_dtype}: {int((got != want).sum())} values differ"


@pytest.mark.parametrize("fn,kwargs", [
    (ties, dict(weight=[1.0, 0.5], density=[0.3, 0.6], rescale=True)),
    (dare_linear, dict(weight=[1.0, 0.5], density=[0.3, 0.6])),  # mergekit's default: L1 rescale
    (breadcrumbs_ties, dict(weight=[1.0, 1.0], density=[0.4, 0.4], gamma=[0.05, 0.05], rescale=True)),
    (della, dict(weight=[1.0, 0.5], density=[0.3, 0.6], epsilon=[0.1, 0.2])),  # mergekit's default: L1 rescale
])
def test_native_l1_rescale_agrees_up_to_the_sum_order(fn, kwargs, torch_path):
    base, models = family(torch.float32, seed=5, n_models=2)
    if fn in RANDOMIZED:
        kwargs = dict(kwargs, generator=seeded(2))
    got = fn(models, base, **kwargs)
    if fn in RANDOMIZED:
        kwargs["generator"] = seeded(2)
    want = torch_path(fn, models, base, **kwargs)
    # torch sums ‖δ‖₁ in float32, the kernel per block in float64: the factors differ by ~1e-5,
    # which can flip a sign election where two rescaled deltas cancel (equal and opposite).
    close = torch.isclose(got, want, rtol=1e-5, atol=2e-7)
    assert int((~close).sum()) <= 2
    if fn is ties:
        kept = [sparsify.magnitude(m - base, d, "l1") for m, d in zip(models, kwargs["density"])]
    elif fn is della:
        kept = [sparsify.della_magprune(m - base, d, e, "l1", seed=model_seed(2, i))
                for i, (m, d, e) in enumerate(zip(models, kwargs["density"], kwargs["epsilon"]))]
    else:
        kept = [sparsify.magnitude_outliers(m - base, d, g, "l1")
                for m, d, g in zip(models, kwargs["density"], kwargs.get("gamma", [0, 0]))]
    weighted = [w * k[~close] for w, k in zip(kwargs["weight"], kept)]
    assert ((weighted[0] + weighted[1]).abs() <= 1e-4 * (weighted[0].abs() + weighted[1].abs())).all()
    assert not torch.equal(got, base)


def test_ties_keeps_exactly_k_per_model_when_the_threshold_is_heavily_tied(torch_path):
    # Integer deltas: a few distinct magnitudes, each shared by ~1/9 of the entries, so the
    # k-th magnitude is tied thousands of times and the cut falls inside the ties.
    g = torch.Generator().manual_seed(3)
    base = torch.zeros(SHAPE)
    models = [torch.randint(-4, 5, SHAPE, generator=g).float() for _ in range(2)]
    n = base.numel()
    for density in (0.1, 0.3, 0.5, 0.77):
        got = ties(models, base, weight=[1.0, 0.0], density=[density, density], normalize=False)
        assert int(torch.count_nonzero(got)) == int(density * n)  # model 1 has weight 0: model 0's trim alone
        assert torch.equal(got, torch_path(ties, models, base, weight=[1.0, 0.0], density=[density, density],
                                           normalize=False))


def magnitudes(x, b):
    return (x.float() - b.float()).abs().view(-1)


@pytest.mark.parametrize("data", ["continuous", "tied", "some_ties", "spike", "sorted"])
def test_kth_magnitudes_match_kthvalue(data):
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
    mags = magnitudes(x, b)
    ks = [1, 17, n // 3, n // 2, n - 5, n]
    found = native.kth_magnitudes([x, x.flip(0)], b, [ks[:3], ks[3:]])
    for th, k in zip(found[0] + found[1], ks):
        t = float(torch.kthvalue(mags, k).values)
        assert th.value == t
        assert th.n_less == int((mags < t).sum()) and th.n_equal == int((mags == t).sum())
        equal = (mags == t).nonzero().view(-1)
        flipped_equal = (mags.flip(0) == t).nonzero().view(-1)
        positions = equal if th in found[0] else flipped_equal
        for need in {1, th.n_equal // 2 + 1, th.n_equal}:
            if need < th.n_equal and t != 0.0:
                assert th.cut(need, n) == int(positions[need - 1]) + 1


def test_sample_that_misses_falls_back_to_a_second_pass_then_to_torch(monkeypatch):
    # Ordered data: the extreme ranks lie outside every gathered interval, so a second pass
    # gathers the interval the counts point to. If even that overflows, torch selects.
    n = 1 << 18
    x, b = torch.linspace(0, 1, n) ** 3, torch.zeros(n)
    passes = []
    real_pass = native.ops.selection_pass

    def counting(xs, base, pivots, lo, hi, cap, overflow=False):
        passes.append(pivots.shape[1])
        counts = real_pass(xs, base, pivots, lo, hi, cap)
        if overflow and pivots.shape[1] == 0:
            counts.found[:] = cap + 1
        return counts

    monkeypatch.setattr(native.ops, "selection_pass", counting)
    for k in (1, 17, n - 5, n):
        passes.clear()
        (th,), = native.kth_magnitudes([x], b, [[k]])
        assert th.value == float(torch.kthvalue(x, k).values)
        assert len(passes) == 2 and passes[0] >= 1 and passes[1] == 0  # counting pass, then a gathering one
    monkeypatch.setattr(native.ops, "selection_pass", lambda *a: counting(*a, overflow=True))
    (th,), = native.kth_magnitudes([x], b, [[17]])
    assert th.value == float(torch.kthvalue(x, 17).values) and th.cut(1, n) == n


def test_draws_are_the_same_on_both_paths():
    n = 5000
    u = uniform_draws(1234, 0, n)
    assert u.min() >= 0 and u.max() < 1 and abs(float(u.mean()) - 0.5) < 0.02
    assert torch.equal(uniform_draws(1234, 100, 50), u[100:150])  # counter-based: position only
    # The kernel's mask for density p keeps exactly the entries with u < p.
    x = torch.ones(1 << 17)
    kept = dare_linear([x], torch.zeros_like(x), weight=[1.0], density=[0.3], rescale=False, generator=seeded(9))
    assert torch.equal(kept != 0, uniform_draws(model_seed(9, 0), 0, x.numel()) < 0.3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_linear_and_task_arithmetic_native_are_bit_identical(dtype, torch_path):
    base, models = family(dtype, seed=1)
    for out_dtype in (dtype, torch.float32):
        got = linear(models, None, weight=[0.2, 0.5, 0.3], out_dtype=out_dtype)
        assert torch.equal(got, torch_path(linear, models, None, weight=[0.2, 0.5, 0.3], out_dtype=out_dtype))
        got = task_arithmetic(models, base, weight=[1.0, -0.5, 0.25], lambda_=0.8, out_dtype=out_dtype)
        assert torch.equal(got, torch_path(task_arithmetic, models, base, weight=[1.0, -0.5, 0.25], lambda_=0.8,
                                           out_dtype=out_dtype))


def test_more_models_than_the_fused_kernel_takes():
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


def test_native_result_does_not_depend_on_the_thread_count():
    base, models = family(torch.bfloat16, seed=8)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 3):
            torch.set_num_threads(t)
            results.append(ties(models, base, weight=[1.0, 1.0, 1.0], density=[0.3, 0.3, 0.3],
                                rescale=True, out_dtype=torch.bfloat16))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])


def test_non_finite_results_are_caught_by_the_kernel():
    base, models = family(torch.bfloat16, seed=2, n_models=2)
    big = [(m.float() * 1e4).to(torch.bfloat16) for m in models]  # deltas of ~20: 3e38 · 20 overflows
    with pytest.raises(NonFiniteMergeError):
        ties(big, base, weight=[3e38, 3e38], density=[0.5, 0.5], normalize=False, out_dtype=torch.bfloat16)
    with pytest.raises(NonFiniteMergeError):  # finite in float32, inf once stored as float16
        linear([m.float() * 1e6 for m in models], None, weight=[10.0, 10.0], normalize=False,
               out_dtype=torch.float16)


def test_merger_names_the_tensor_when_the_native_merge_overflows():
    base, models = family(torch.bfloat16, seed=2, n_models=1)
    from merging import Merger, parse_plan
    m = Merger({"base": {"w.weight": base}, "a": {"w.weight": (models[0].float() * 1e4).bfloat16()}}, base="base")
    plan = parse_plan({"merge_method": "ties", "base_model": "base", "dtype": "bfloat16",
                       "models": [{"model": "a", "parameters": {"weight": 3e38, "density": 0.5}}],
                       "parameters": {"normalize": False}}, "ties")
    with pytest.raises(NonFiniteMergeError, match=r"ties: merged tensor w\.weight contains NaN or inf"):
        m.merge_to_dict(plan)


def test_kernels_build_into_the_cache_and_degrade_without_a_compiler(tmp_path):
    code = ("import warnings, torch; warnings.simplefilter('always');"
            "from merging.native import library; from merging.methods.ties import ties;"
            "lib = library(); print('native', lib is not None);"
            "b = torch.zeros(1 << 17); x = torch.randn(1 << 17, generator=torch.Generator().manual_seed(0));"
            "print(float(ties([x], b, weight=[1.0], density=[0.5]).abs().sum()))")
    env = dict(os.environ, SOUPSEARCH_CACHE=str(tmp_path / "cache"))
    built = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert "native True" in built.stdout and list((tmp_path / "cache" / "kernels").glob("kernels-*.so"))
    broken = subprocess.run([sys.executable, "-c", code], env=dict(env, CC="false", SOUPSEARCH_CACHE=str(tmp_path / "c2")),
                            capture_output=True, text=True, timeout=300)
    assert broken.returncode == 0, broken.stderr
    assert "native False" in broken.stdout and "native merge kernels unavailable" in broken.stderr
    # The torch fallback merges the same values.
    assert broken.stdout.splitlines()[-1] == built.stdout.splitlines()[-1]
    off = subprocess.run([sys.executable, "-c", code], env=dict(env, SOUPSEARCH_NATIVE="0"),
                         capture_output=True, text=True, timeout=300)
    assert "native False" in off.stdout and off.stdout.splitlines()[-1] == built.stdout.splitlines()[-1]


def test_counts_and_sums_do_not_depend_on_block_split():
    # l1 sums are per 64K block in float64, added in block order: the same for any thread count.
    base, models = family(torch.float32, seed=6, n_models=1, shape=(1 << 18,))
    threads = torch.get_num_threads()
    try:
        sums = []
        for t in (1, 2, 4):
            torch.set_num_threads(t)
            sums.append(ops.l1_norms(models[0], base, ops.keep_everything()))
    finally:
        torch.set_num_threads(threads)
    assert sums[0] == sums[1] == sums[2]
    assert sums[0][0] == pytest.approx(float((models[0] - base).abs().double().sum()), rel=1e-6)


def test_merger_merges_the_stored_dtype_as_the_method_does():
    base, models = family(torch.bfloat16, seed=9, n_models=2)
    from merging import Merger, parse_plan
    m = Merger({"base": {"w.weight": base}, "a": {"w.weight": models[0]}, "b": {"w.weight": models[1]}},
               base="base")
    plan = parse_plan({"merge_method": "ties", "base_model": "base", "dtype": "bfloat16",
                       "models": [{"model": k, "parameters": {"weight": 1.0, "density": 0.4}} for k in "ab"]}, "ties")
    merged = m.merge_to_dict(plan)["w.weight"]
    assert merged.dtype == torch.bfloat16
    assert torch.equal(merged, ties(models, base, weight=[1.0, 1.0], density=[0.4, 0.4], out_dtype=torch.bfloat16))


@pytest.mark.parametrize("shape", [(200_000,), (300, 777), (5, 70_001)])
def test_della_rows_of_any_length_match_torch(shape, torch_path):
    # A 1-D tensor is one row; 777 puts rows at odd bit offsets of the L1 path's masks and
    # across the threads' ranges; 70,001 is longer than a chunk.
    g = torch.Generator().manual_seed(len(shape))
    base = torch.randn(shape, generator=g) * 0.02
    models = [(base + 0.002 * torch.randn(shape, generator=g)).bfloat16() for _ in range(3)]
    base = base.bfloat16()
    kw = dict(weight=[0.5, 0.3, 0.2], density=[0.3, 0.5, 1.0], epsilon=[0.1, 0.2, 0.1])
    for fn, extra in ((della, dict(rescale=False)), (della_linear, dict(rescale_norm="inverse_density")),
                      (della_linear, {})):
        got = fn(models, base, **kw, **extra, generator=seeded(5))
        want = torch_path(fn, models, base, **kw, **extra, generator=seeded(5))
        if extra:
            assert torch.equal(got, want), extra
        else:  # L1: the norms are summed in another order
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def portable_library(tmp_path_factory):
    """The kernels built for a CPU without AVX-512 (x86-64-v3: AVX2, as on most laptops), so
    that the fallback loops behind the AVX-512 paths are checked on this machine too."""
    import ctypes
    import platform
    import shutil

    from merging.native import FLAGS, SOURCE, _declare

    compiler = os.environ.get("CC") or "cc"
    if platform.machine() not in ("x86_64", "AMD64") or shutil.which(compiler) is None:
        pytest.skip("the portable build is an x86-64 check")
    out = tmp_path_factory.mktemp("portable") / "kernels.so"
    flags = [f for f in FLAGS if f != "-march=native"] + ["-march=x86-64-v3"]
    subprocess.run([compiler, *flags, "-o", str(out), str(SOURCE), "-lm"], check=True, timeout=600)
    return _declare(ctypes.CDLL(str(out)))


@pytest.mark.parametrize("case", sorted(EXACT_CASES))
def test_portable_build_is_bit_identical_to_torch(case, portable_library, torch_path, monkeypatch):
    monkeypatch.setattr(ops, "library", lambda: portable_library)
    fn, kwargs = EXACT_CASES[case]
    base, models = family(torch.bfloat16, seed=sum(map(ord, case)))
    extra = dict(generator=seeded(11)) if fn in RANDOMIZED else {}
    got = fn(models, base, **kwargs, **extra)
    want = torch_path(fn, models, base, **kwargs, **(dict(generator=seeded(11)) if extra else {}))
    assert torch.equal(got, want), f"{case}: {int((got != want).sum())} values differ"


@pytest.mark.parametrize("fn,kw", [(della, dict(epsilon=[0.1, 0.2])), (dare_ties, {})])
def test_portable_build_drop_masks_match_torch(fn, kw, portable_library, torch_path, monkeypatch):
    # the L1 path: masks at odd bit offsets (rows of 777), the sums' scalar loops
    monkeypatch.setattr(ops, "library", lambda: portable_library)
    g = torch.Generator().manual_seed(3)
    base = torch.randn(300, 777, generator=g) * 0.02
    models = [(base + 0.002 * torch.randn(300, 777, generator=g)).bfloat16() for _ in range(2)]
    kw = dict(kw, weight=[0.5, 0.3], density=[0.3, 0.5])
    got = fn(models, base.bfloat16(), **kw, generator=seeded(5))
    want = torch_path(fn, models, base.bfloat16(), **kw, generator=seeded(5))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("consensus", [False, True])
def test_dare_l1_masks_equal_drawing_in_the_mix(consensus):
    # Under an L1 rescale DARE draws once, into masks summed in the same pass (drop_masks);
    # the sums and kept entries must be exactly those of l1_sums and of drawing in the mix.
    from merging.keep_rules import RandomDrop

    shape = (300, 777)  # rows at odd bit offsets; three 64K blocks
    base, models = family(torch.bfloat16, seed=12, n_models=3, shape=shape)
    weight, density = [0.6, 0.3, 0.5], [0.2, 0.5, 0.9]
    fn = dare_ties if consensus else dare_linear
    got = fn(models, base, weight=weight, density=density, normalize=consensus, generator=seeded(4))
    n = base.numel()
    keeps = [native.keep_rule(RandomDrop(d, 4, "l1"), n, i, []) for i, d in enumerate(density)]
    for keep, x, w in zip(keeps, models, weight):
        before, after = ops.l1_norms(x, base, keep)
        keep.coef, keep.weight = w * before / after, w
    want = torch.empty(shape, dtype=got.dtype)
    ops.mix(models, base, want, keeps, consensus=consensus, normalize=consensus, lambda_=1.0)
    assert torch.equal(got, want)


@pytest.mark.parametrize("data", ["continuous", "tied", "one_value", "zeros_and_spread"])
def test_select_kth_matches_a_sort(data):
    import numpy as np

    rng = np.random.default_rng(len(data))
    values = {"continuous": rng.random(100_003).astype(np.float32),
              "tied": (rng.integers(0, 700, 100_003) * 2.0**-13).astype(np.float32),   # bf16-delta-like
              "one_value": np.full(5000, 0.25, dtype=np.float32),
              "zeros_and_spread": np.concatenate([np.zeros(300), rng.random(700) * 1e30,
                                                  rng.random(50) * 1e-30]).astype(np.float32)}[data]
    ordered = np.sort(values)
    for r in (0, values.size // 3, values.size // 2, values.size - 1):
        t, less, equal = ops.select_kth(values, r)
        assert t == ordered[r]
        assert less == int(np.count_nonzero(values < t)) and equal == int(np.count_nonzero(values == t))
    with pytest.raises(ValueError, match="outside"):
        ops.select_kth(values, values.size)
