"""Exact magnitude thresholds for TIES and Breadcrumbs, without sorting a tensor.

A rank window keeps the entries of δ = x − b whose magnitude rank (ties in index order)
lies in a range; what the mixing pass needs is, per boundary rank r, the r-th smallest
magnitude t, how many magnitudes are below it and equal to it, and where in index order
the tie at t must be cut. Sorting a whole tensor to get that (mergekit) costs tens of
passes over memory; here it costs one counting pass, and rarely a second:

1. A sorted sample of n/256 magnitudes, 1K to 16K (a prime stride: no aliasing with rows)
   brackets rank r with a few binomial standard deviations of slack; three pivots span
   the bracket — or, when the bracket holds three distinct values or fewer (heavy ties:
   deltas of bf16 checkpoints take few distinct values), are those values.
2. One fused pass counts #(|δ| < p) and #(|δ| ≤ p) for every pivot. If t is a pivot the
   counts give it, with its ties; otherwise t lies strictly between two adjacent pivots,
   and a second pass gathers the magnitudes there (a fraction of a percent of them) for
   torch.kthvalue. A sample that misses (structured data) only makes that set bigger.
3. If the cut falls inside the tie at t, a pass marks the entries equal to t and a
   bisection on counts finds the one where it falls.

mergekit takes a window of an unstable argsort, so its choice among equal magnitudes is
arbitrary; with distinct magnitudes both select the same entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from merging import kernels
from merging.compile import run
from merging.keep_rules import prev_float32, prime_at_least

SAMPLE_BOUNDS = (1 << 10, 1 << 14)   # sample size: n/256 between these
DIRECT_SELECT = 1 << 16              # smaller tensors: torch.kthvalue on every magnitude
BRACKET_SIGMAS = 4.0                 # bracket half-width in binomial standard deviations
PIVOTS = 4                           # counted per pass (a fixed number: one compiled kernel)


@dataclass(frozen=True)
class Threshold:
    """The r-th smallest magnitude `value`, how many are below it and how many equal it."""

    value: float
    n_less: int
    n_equal: int


def magnitude_at_rank(x: torch.Tensor, b: torch.Tensor | None, rank: int) -> Threshold:
    """The `rank`-th smallest (1-based) of |x − b| over flat tensors, exactly."""
    n = x.numel()
    if not 1 <= rank <= n:
        raise ValueError(f"rank {rank} is out of range for {n} elements")
    if n <= DIRECT_SELECT:
        return Threshold(*_select_directly(x, b, rank))
    return Threshold(*_select_by_counting(x, b, rank))


def tie_cut(x: torch.Tensor, b: torch.Tensor | None, threshold: Threshold, need: int) -> int:
    """One past the index of the `need`-th entry (index order) whose magnitude equals the
    threshold: where a rank boundary splits the tie. n when the whole tie is taken, and
    for a threshold of 0 (ties at 0 stay 0 whichever side they fall on)."""
    if need >= threshold.n_equal or threshold.value == 0.0:
        return x.numel()
    return _nth_equal(x, b, threshold.value, need) + 1


def _magnitudes(x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return (x.float() if b is None else x.float() - b.float()).abs()


def _select_directly(x: torch.Tensor, b: torch.Tensor | None, rank: int) -> tuple[float, int, int]:
    mags = _magnitudes(x, b)
    t = float(torch.kthvalue(mags.cpu() if mags.device.type == "mps" else mags, rank).values)
    return t, int((mags < t).sum()), int((mags == t).sum())


def _select_by_counting(x: torch.Tensor, b: torch.Tensor | None, rank: int) -> tuple[float, int, int]:
    n = x.numel()
    size = min(max(n // 256, SAMPLE_BOUNDS[0]), SAMPLE_BOUNDS[1])
    stride = prime_at_least(n // size)
    offset = stride // 2
    sample = torch.sort(_magnitudes(x[offset::stride], None if b is None else b[offset::stride])).values
    pivots = _pivots(sample, rank / n)
    counts = run(kernels.count_at_most, None, [x, b], pivots.to(x.device),
                 dtype=torch.int32 if n < 2**31 else torch.int64).cpu()
    below, at_most = counts[0].tolist(), counts[1].tolist()
    values = pivots.tolist()
    j = next(i for i, c in enumerate(at_most) if c >= rank)
    if below[j] < rank:  # t is pivot j
        return values[j], below[j], at_most[j] - below[j]
    low = values[j - 1] if j > 0 else -1.0
    before = at_most[j - 1] if j > 0 else 0
    index = _marked(x, b, low, prev_float32(values[j])).nonzero().view(-1)
    candidates = _magnitudes(x[index], None if b is None else b[index])
    t = float(torch.kthvalue(candidates.cpu(), rank - before).values)
    return t, before + int((candidates < t).sum()), int((candidates == t).sum())


def _pivots(sample: torch.Tensor, q: float) -> torch.Tensor:
    """PIVOTS values spanning the sample's bracket around quantile q (its distinct values when
    it holds few), padded with +inf, whose counts are n: every rank lies at or below it."""
    m = sample.numel()
    half = BRACKET_SIGMAS * math.sqrt(m * q * (1.0 - q)) + 2.0
    first, last = max(0, math.floor(q * m - half)), min(m - 1, math.ceil(q * m + half))
    bracket = sample[first : last + 1]
    distinct = torch.unique_consecutive(bracket)
    if distinct.numel() <= PIVOTS - 1:
        chosen = distinct
    else:
        positions = torch.linspace(0, bracket.numel() - 1, PIVOTS - 1).round().long()
        chosen = torch.unique_consecutive(bracket[positions])
    padding = torch.full((PIVOTS - chosen.numel(),), math.inf)
    return torch.cat([chosen.float().cpu(), padding])


def _marked(x: torch.Tensor, b: torch.Tensor | None, low: float, high: float) -> torch.Tensor:
    """An int8 mask of the entries with low < |x − b| ≤ high."""
    mask = torch.empty(x.numel(), dtype=torch.int8, device=x.device)
    run(kernels.mark_range_, mask, [x, b], torch.tensor(low, device=x.device), torch.tensor(high, device=x.device))
    return mask


def _nth_equal(x: torch.Tensor, b: torch.Tensor | None, value: float, nth: int) -> int:
    """Index of the nth (1-based) entry with |x − b| == value: a marking pass, then bisection
    on counts (ties can number in the millions; listing them all would cost far more)."""
    mask = _marked(x, b, prev_float32(value), value)
    offset, size = 0, mask.numel()
    while size > (1 << 16):
        half = size // 2
        left = int(mask[offset : offset + half].count_nonzero())
        if nth <= left:
            size = half
        else:
            nth, offset, size = nth - left, offset + half, size - half
    hits = mask[offset : offset + size].nonzero()
    if nth > hits.shape[0]:
        raise ValueError("fewer entries equal to the threshold than counted")
    return offset + int(hits[nth - 1])
