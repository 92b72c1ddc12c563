"""Generalized task arithmetic on the fused kernels: thresholds first, then one mixing pass.

Same semantics as `merging.sparsify.merge_task_vectors` (which calls this on CPU when the
kernels are built and the rules allow it), and the same bits where no L1 rescale is
involved; what differs is how a rank window's threshold is found. Instead of
materializing |θ_i − θ_base|, one pass over all models counts, per model and 64K block,
the magnitudes below and at a few pivots (from a 16K-element sample around each wanted
rank: its order statistics, or every distinct value when there are few) and gathers the
few percent lying between the outer pivots, in index order. The k-th magnitude t is then
either a pivot (heavy ties: deltas of bf16 checkpoints take few distinct values) or found
among the gathered values; either way per-block counts say which block holds the tie
where the cut falls, and one block is scanned. Rarely (a sample that misses: ordered
data) a second gathering pass on the interval the counts point to follows, or, failing
that, torch's selection. A keep rule is then a threshold per side with a cut index
between the ties, applied by the mixing kernel on the fly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from merging.keep_rules import (RESCALE_EPS, DellaDrop, KeepRule, RandomDrop, RankWindow, TopK, model_seed,
                                prev_float32, top_k_count, trivial, window_ranks)
from merging.native import ops

SAMPLE = 1 << 14              # magnitudes sampled per selection (runs of 16 spread evenly)
BRACKET_SIGMAS = 4.0          # outer pivots lie this many binomial standard deviations out


def supports(rules: Sequence[KeepRule | None], dims: int) -> bool:
    """DELLA's rows are the last dimension for the kernels, which is mergekit's dim 1 up to 2-D."""
    return all(r is None or isinstance(r, (TopK, RankWindow, RandomDrop)) or (isinstance(r, DellaDrop) and dims <= 2)
               for r in rules)


class Threshold:
    """The k-th smallest magnitude t of |x − b|, how many are below it and equal to it, and
    where the `need`-th element equal to t lies in index order."""

    def __init__(self, value: float, n_less: int, n_equal: int, equal_index: Callable[[int], int]) -> None:
        self.value, self.n_less, self.n_equal, self._equal_index = value, n_less, n_equal, equal_index

    def cut(self, need: int, n: int) -> int:
        """One past the index of the need-th element equal to t; n when all of them are taken."""
        if need >= self.n_equal or self.value == 0.0:  # ties at 0 stay 0 whichever side they fall on
            return n
        return self._equal_index(need) + 1


MAX_PIVOTS = 6                # pivots per wanted rank when the bracket holds few distinct values


def _bracket(sample: np.ndarray, k: int, n: int) -> tuple[int, int, int]:
    """Sample positions of the bracket's ends and of k's own quantile, a few binomial
    standard deviations apart."""
    m = sample.size
    q = k / n
    half = BRACKET_SIGMAS * math.sqrt(m * q * (1.0 - q)) + 2.0
    return (max(0, math.floor(q * m - half)), min(m - 1, max(0, round(q * m) - 1)),
            min(m - 1, math.ceil(q * m + half)))


def _pivots(sample: np.ndarray, k: int, n: int) -> tuple[list[float], float, float]:
    """Pivots for rank k and the open interval to gather, from a sorted sample. When the
    bracket holds few distinct values (heavy ties: bf16 deltas), every one of them is a
    pivot, so that t is one and its ties are located from counts; otherwise the ends and
    the middle."""
    first, middle, last = _bracket(sample, k, n)
    bracket = sample[first : last + 1]  # a few hundred values
    distinct = bracket[np.concatenate(([True], bracket[1:] != bracket[:-1]))]
    if distinct.size <= MAX_PIVOTS:
        values = distinct.tolist()
    else:
        values = sorted({float(bracket[0]), float(bracket[middle - first]), float(bracket[-1])})
    return values, float(bracket[0]), float(bracket[-1])


def kth_magnitudes(xs: Sequence[torch.Tensor], b: torch.Tensor, ks: Sequence[Sequence[int]]) -> list[list[Threshold]]:
    """For each model m, the ks[m]-th smallest (1-based) of |x_m − b|, in one pass over all models.

    Every model gets up to MAX_PIVOTS pivots per k from its own sample, counted exactly in
    the pass, and the magnitudes strictly between each k's outer pivots (a few percent) are
    gathered.
    """
    n = xs[0].numel()
    per_model = max(len(k) for k in ks)
    chosen: list[list[float]] = []
    lo = np.zeros((len(xs), per_model), dtype=np.float32)   # unused intervals stay empty (0, 0)
    hi = np.zeros_like(lo)
    for m, (x, model_ks) in enumerate(zip(xs, ks)):
        sample = ops.sample_magnitudes(x, b, SAMPLE)
        sample.sort()  # numpy's vectorized sort: faster than partitioning the heavily tied samples of bf16 deltas
        values: set[float] = set()
        for g, k in enumerate(model_ks):
            pivots_k, lo[m, g], hi[m, g] = _pivots(sample, k, n)
            values.update(pivots_k)
        chosen.append(sorted(values))
    width = max(len(v) for v in chosen)
    pivots = np.array([v + [v[-1]] * (width - len(v)) for v in chosen], dtype=np.float32)  # repeats count alike
    # Gather room per thread range and interval; the odd extra keeps the buffers of different
    # intervals off the same 4 KiB offsets (store aliasing cost ~15% of the pass).
    cap = max(1 << 16, n // 16) + 1040
    counts = ops.selection_pass(xs, b, pivots, lo, hi, cap)
    return [[_resolve(x, b, k, pivots[m], counts.lt[m], counts.le[m], (float(lo[m, g]), float(hi[m, g])),
                      lambda g=g, m=m: counts.values(m, g, per_model), cap)
             for g, k in enumerate(model_ks)] for m, (x, model_ks) in enumerate(zip(xs, ks))]


def _resolve(x: torch.Tensor, b: torch.Tensor, k: int, pivots: np.ndarray, lt_blocks: np.ndarray,
             le_blocks: np.ndarray, interval: tuple[float, float],
             gathered: Callable[[], tuple[np.ndarray, np.ndarray] | None],
             cap: int) -> Threshold:
    """The k-th magnitude from one pass's counts at the pivots and the magnitudes gathered
    in `interval` (open)."""
    lt, le = lt_blocks.sum(0).tolist(), le_blocks.sum(0).tolist()
    piv = [float(p) for p in pivots]
    for j, p in enumerate(piv):
        if lt[j] < k <= le[j]:  # t is this pivot: per-block counts of it locate its ties
            per_block_equal = np.cumsum(le_blocks[:, j] - lt_blocks[:, j])
            return Threshold(p, lt[j], le[j] - lt[j],
                             lambda need, eq=per_block_equal, p=p: _equal_index_from_blocks(x, b, eq, p, need))
    # t lies strictly between two pivots (or beyond the outer ones)
    below = [j for j in range(len(piv)) if le[j] < k]
    above = [j for j in range(len(piv)) if lt[j] >= k]
    lo, f_lo = (piv[below[-1]], le[below[-1]]) if below else (-math.inf, 0)
    hi = piv[above[0]] if above else math.inf
    found = gathered() if below and above and interval[0] <= lo and hi <= interval[1] else None
    if found is None:  # the interval was not gathered whole: gather it now
        found = ops.selection_pass([x], b, np.zeros((1, 0), np.float32), np.array([[lo]]), np.array([[hi]]),
                                   cap).values(0, 0, 1)
        if found is None:  # the sample missed badly: select on the materialized magnitudes
            return _materialized(x, b, k)
    values, ends = found
    # t is the (k − f_lo)-th of the gathered values in (lo, hi); the gathered values ≤ lo
    # all rank below those, so it is found among all of them without filtering copies.
    at_or_below = int(np.count_nonzero(values <= lo))
    t, less, equal = ops.select_kth(values, k - f_lo - 1 + at_or_below)

    def equal_index(need: int) -> int:
        # the block of each gathered value equal to t, from the blocks' cumulative counts
        blocks = np.searchsorted(ends, np.flatnonzero(values == t), side="right")
        return _equal_index_from_blocks(x, b, np.cumsum(np.bincount(blocks, minlength=ends.size)), t, need)

    return Threshold(t, f_lo + less - at_or_below, equal, equal_index)


def _equal_index_from_blocks(x, b, per_block_equal: np.ndarray, value: float, need: int) -> int:
    """Where the need-th magnitude equal to `value` lies, given how many of them the blocks
    up to each one hold (cumulative): one block is scanned."""
    block = int(np.searchsorted(per_block_equal, need))
    before = int(per_block_equal[block - 1]) if block > 0 else 0
    start = block * ops.BLOCK
    found = ops.nth_equal(x, b, start, min(x.numel(), start + ops.BLOCK), value, need - before)
    if found < 0:
        raise RuntimeError("native selection: per-block tie counts disagree with the data")
    return found


def _materialized(x: torch.Tensor, b: torch.Tensor, k: int) -> Threshold:
    from merging.sparsify import kth_smallest  # the torch selection, exact on any data

    mags = (x.reshape(-1).float() - b.reshape(-1).float()).abs_()
    sel = kth_smallest(mags, k)
    equal = (mags == sel.value).nonzero().view(-1)
    return Threshold(sel.value, sel.n_less, sel.n_equal, lambda need: int(equal[need - 1]))


def ranks_needed(rule: KeepRule | None, n: int) -> list[int]:
    """The (1-based, ascending) magnitude ranks whose values a rule's thresholds are made of."""
    if trivial(rule) is not None:
        return []
    if isinstance(rule, TopK):
        return [n - top_k_count(rule.density, n) + 1]
    if isinstance(rule, RankWindow):
        start, stop = window_ranks(rule, n)
        return [r for r in (start, stop) if 0 < r < n] if start < stop else []
    return []


def keep_rule(rule: KeepRule | None, n: int, model: int, thresholds: Sequence[Threshold],
              row_len: int = 0) -> ops.KeepRule:
    """The kernel's keep rule for one model (coef 1, weight 1), given the magnitudes at
    `ranks_needed(rule, n)` (and, for DELLA, the length of the rows it ranks within)."""
    keep = ops.keep_everything()
    state = trivial(rule)
    if state == "all":
        return keep
    if state == "none":
        keep.coef = 0.0
        return keep
    if isinstance(rule, TopK):  # keep descending ranks [0, k): v ≥ t before the cut, v > t after
        k = top_k_count(rule.density, n)
        (th,) = thresholds
        greater = n - th.n_less - th.n_equal
        keep.low_cut = th.cut(k - greater, n)
        keep.low_head, keep.low_tail = prev_float32(th.value), th.value
    elif isinstance(rule, RankWindow):  # ascending ranks [start, stop)
        start, stop = window_ranks(rule, n)
        if start >= stop:
            keep.coef = 0.0
            return keep
        found = iter(thresholds)
        if start > 0:  # drop ranks < start: v ≤ t before the cut, v < t after
            th = next(found)
            keep.low_cut = th.cut(start - th.n_less, n)
            keep.low_head, keep.low_tail = th.value, prev_float32(th.value)
        if stop < n:  # drop ranks ≥ stop: keep v ≤ t before the cut, v < t after
            th = next(found)
            keep.high_cut = th.cut(stop - th.n_less, n)
            keep.high_head, keep.high_tail = th.value, prev_float32(th.value)
    elif isinstance(rule, RandomDrop):
        keep.random, keep.density = 1, rule.density
        keep.seed = model_seed(rule.seed, model)
    elif isinstance(rule, DellaDrop):
        keep.della, keep.row_len = 1, row_len
        keep.della_inverse = int(rule.rescale_norm == "inverse_density")
        keep.della_lo, keep.della_span = rule.density - rule.epsilon, 2 * rule.epsilon
        keep.seed = model_seed(rule.seed, model)
    else:
        raise TypeError(f"no native kernel for {type(rule).__name__}")
    return keep


def _l1_factor(before: float, after: float) -> float:
    return before / after if before >= RESCALE_EPS and after >= RESCALE_EPS else 1.0


def rescale_factor(x: torch.Tensor, b: torch.Tensor, rule: KeepRule | None, keep: ops.KeepRule) -> float:
    norm = None if trivial(rule) is not None else rule.rescale_norm
    if norm == "l1":
        return _l1_factor(*ops.l1_norms(x, b, keep))
    if norm == "inverse_density":  # DELLA's per-entry 1/p is applied by the kernel
        return 1.0 if isinstance(rule, DellaDrop) else 1.0 / rule.density
    return 1.0


def merge(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weight: Sequence[float],
    rules: Sequence[KeepRule | None],
    consensus: bool,
    normalize: bool,
    lambda_: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, int]:
    """The merged tensor in `out_dtype`, and how many of its values are NaN or inf."""
    base, *tensors = ops.one_dtype([base, *tensors])
    divisor = float(sum(weight)) if normalize and not consensus else 1.0
    if abs(divisor) < 1e-8:
        divisor = 1.0
    n = base.numel()
    row_len = base.shape[-1] if base.dim() == 2 else n  # DELLA's rows (a 1-D tensor is one)
    # Every rank threshold of every model comes out of one pass over all of them.
    needed = {i: ranks_needed(rule, n) for i, rule in enumerate(rules)}
    ranked = [i for i, ks in needed.items() if ks]
    found = kth_magnitudes([tensors[i] for i in ranked], base, [needed[i] for i in ranked]) if ranked else []
    thresholds = dict(zip(ranked, found))
    keeps = [keep_rule(rule, n, i, thresholds.get(i, []), row_len) for i, rule in enumerate(rules)]
    # Random drops (DELLA, DARE) with an L1 rescale need their norms before the mix: one pass
    # over all models (the base read once) draws every model's keep mask and sums the norms,
    # and the mix then reads the masks rather than drawing (and ranking DELLA's rows) again.
    drawn = [i for i, (rule, keep) in enumerate(zip(rules, keeps))
             if (keep.della or keep.random) and keep.coef != 0.0 and rule.rescale_norm == "l1"]
    factors: dict[int, float] = {}
    if drawn:
        masks, norms = ops.drop_masks([tensors[i] for i in drawn], base, [keeps[i] for i in drawn])
        for i, mask, (before, after) in zip(drawn, masks, norms):
            keeps[i].della, keeps[i].random, keeps[i].mask = 0, 0, mask.ctypes.data
            factors[i] = _l1_factor(before, after)
    for i, (x, w, rule, keep) in enumerate(zip(tensors, weight, rules, keeps, strict=True)):
        scale = factors[i] if i in factors else rescale_factor(x, base, rule, keep) if keep.coef != 0.0 else 1.0
        if consensus:
            keep.coef, keep.weight = keep.coef * float(w) * scale, float(w)
        else:
            keep.coef = keep.coef * float(lambda_) * float(w) * scale / divisor
    out = torch.empty(base.shape, dtype=out_dtype)
    bad = ops.mix(tensors, base, out, keeps, consensus=consensus, normalize=normalize, lambda_=lambda_)
    return out, bad
