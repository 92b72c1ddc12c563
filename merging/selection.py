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
3. If the cut falls inside the tie at t, one pass counts the entries equal to t per block
   of 4096, for every cut of every model of the merge together, and the cut's block is
   searched.

mergekit takes a window of an unstable argsort, so its choice among equal magnitudes is
arbitrary; with distinct magnitudes both select the same entries.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from merging import kernels
from merging.compile import compiled_kernel, run, will_compile
from merging.keep_rules import prev_float32, prime_at_least

SAMPLE_BOUNDS = (1 << 10, 1 << 14)   # sample size: n/256 between these
DIRECT_SELECT = 1 << 16              # smaller tensors: torch.kthvalue on every magnitude
BRACKET_SIGMAS = 4.0                 # bracket half-width in binomial standard deviations
PIVOTS = 4                           # counted per pass (a fixed number: one compiled kernel)
TIE_BLOCK = 1 << 12                  # tie counts per block of this many entries
TIE_SLOTS = 2                        # tie cuts per model a merge can have: a rank window's two ends


@dataclass(frozen=True)
class Threshold:
    """The r-th smallest magnitude `value`, how many are below it and how many equal it."""

    value: float
    n_less: int
    n_equal: int


def magnitude_at_rank(x: torch.Tensor, b: torch.Tensor | None, rank: int) -> Threshold:
    """The `rank`-th smallest (1-based) of |x − b| over flat tensors, exactly."""
    return magnitudes_at_ranks([x], b, [[rank]])[0][0]


def magnitudes_at_ranks(xs: Sequence[torch.Tensor], b: torch.Tensor | None,
                        ranks: Sequence[Sequence[int]]) -> list[list[Threshold]]:
    """For each model i and each rank r in ranks[i], the r-th smallest (1-based) of
    |x_i − b| over flat tensors, exactly. Every model's counting is one pass, which reads
    the base once."""
    n = b.numel() if b is not None else xs[0].numel()
    for rs in ranks:
        for rank in rs:
            if not 1 <= rank <= n:
                raise ValueError(f"rank {rank} is out of range for {n} elements")
    if n <= DIRECT_SELECT:
        return [[Threshold(*_select_directly(x, b, r)) for r in rs] for x, rs in zip(xs, ranks)]
    wanted = [(i, r) for i, rs in enumerate(ranks) for r in rs]
    models = sorted({i for i, _ in wanted})
    slot = {i: s for s, i in enumerate(models)}
    samples = {i: _sample(xs[i], b) for i in models}
    pivots = torch.stack([_pivots(samples[i], r / n) for i, r in wanted])
    counts = run(kernels.count_at_most, None, [b, *(xs[i] for i in models)], pivots.to(xs[0].device),
                 owners=tuple(slot[i] for i, _ in wanted), dtype=torch.int32 if n < 2**31 else torch.int64).cpu()
    found = _resolve_all(xs, b, wanted, pivots.tolist(), counts[:, 0].tolist(), counts[:, 1].tolist())
    out: list[list[Threshold]] = [[] for _ in ranks]
    for (i, _), threshold in zip(wanted, found):
        out[i].append(threshold)
    return out


def tie_cut(x: torch.Tensor, b: torch.Tensor | None, threshold: Threshold, need: int) -> int:
    """One past the index of the `need`-th entry (index order) whose magnitude equals the
    threshold: where a rank boundary splits the tie. n when the whole tie is taken, and
    for a threshold of 0 (ties at 0 stay 0 whichever side they fall on)."""
    return tie_cuts([x], b, [(0, threshold, need)])[0]


def tie_cuts(xs: Sequence[torch.Tensor], b: torch.Tensor | None,
             requests: Sequence[tuple[int, Threshold, int]]) -> list[int]:
    """`tie_cut(xs[model], b, threshold, need)` for each (model, threshold, need). Compiled,
    every cut of every model costs one pass together (`kernels.count_equal_blocks` finds
    each one's block, then one block is searched); eagerly, each is a marking pass and a
    bisection. Deltas of bf16 checkpoints take few distinct values, so most thresholds are
    tied and a TIES or Breadcrumbs merge has a cut per model and boundary."""
    n = xs[0].numel()
    cuts = [n] * len(requests)
    pending = [(k, m, th, need) for k, (m, th, need) in enumerate(requests) if need < th.n_equal and th.value != 0.0]
    if not pending:
        return cuts
    full = n // TIE_BLOCK * TIE_BLOCK
    if full == 0 or not will_compile(n, xs[0].device):
        for k, m, th, need in pending:
            cuts[k] = _nth_equal(xs[m], b, th.value, need) + 1
        return cuts
    # Every model, TIE_SLOTS cuts each (unused ones NaN: equal to nothing), whichever cuts are
    # pending: one compiled configuration per number of models, not one per outcome.
    slots = max(TIE_SLOTS, *Counter(m for _, m, _, _ in pending).values())
    values = torch.full((len(xs), slots), math.nan, dtype=torch.float32)
    used, rows = [0] * len(xs), []
    for _, m, th, _ in pending:
        values[m, used[m]] = th.value
        rows.append(m * slots + used[m])
        used[m] += 1
    counts = compiled_kernel(kernels.count_equal_blocks)(
        [None if b is None else b[:full], *(x[:full] for x in xs)], values.to(xs[0].device), block=TIE_BLOCK,
        slots=slots)
    totals = counts.view(len(xs) * slots, -1)[rows].cumsum(dim=1).cpu()
    for row, (k, m, th, need) in enumerate(pending):
        block = int(torch.searchsorted(totals[row], need)) if need <= int(totals[row, -1]) else full // TIE_BLOCK
        before = int(totals[row, block - 1]) if block > 0 else 0
        start = block * TIE_BLOCK
        stop = start + TIE_BLOCK if block < full // TIE_BLOCK else n
        seg = kernels.magnitudes(xs[m][start:stop], None if b is None else b[start:stop])
        hits = (seg == th.value).nonzero().view(-1)
        if need - before > hits.numel():
            raise ValueError("fewer entries equal to the threshold than counted")
        cuts[k] = start + int(hits[need - before - 1]) + 1
    return cuts


def _select_directly(x: torch.Tensor, b: torch.Tensor | None, rank: int) -> tuple[float, int, int]:
    """torch.kthvalue on every magnitude: small tensors."""
    mags = kernels.magnitudes(x, b)
    t = float(torch.kthvalue(mags.cpu() if mags.device.type == "mps" else mags, rank).values)
    return t, int((mags < t).sum()), int((mags == t).sum())


def _sample(x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """A sorted sample of n/256 magnitudes (within SAMPLE_BOUNDS), at a prime stride."""
    n = x.numel()
    stride = prime_at_least(n // min(max(n // 256, SAMPLE_BOUNDS[0]), SAMPLE_BOUNDS[1]))
    offset = stride // 2
    return torch.sort(kernels.magnitudes(x[offset::stride], None if b is None else b[offset::stride])).values


def _resolve_all(xs: Sequence[torch.Tensor], b: torch.Tensor | None, wanted: Sequence[tuple[int, int]],
                 values: list[list[float]], below: list[list[int]], at_most: list[list[int]]) -> list[Threshold]:
    """Each (model, rank)'s threshold from the counts at its pivots: a pivot itself, or found
    among the magnitudes strictly between the two pivots around it. Those are gathered for
    every rank of every model in one more pass (`kernels.mark_ranges_`: an int8 code per
    entry and model naming the interval it falls in), a fraction of a percent of the entries."""
    found: list[Threshold | None] = [None] * len(wanted)
    intervals: dict[int, list[tuple[float, float, int, list[tuple[int, int]]]]] = {}
    for k, (i, rank) in enumerate(wanted):
        j = next(p for p, c in enumerate(at_most[k]) if c >= rank)
        if below[k][j] < rank:  # t is pivot j
            found[k] = Threshold(values[k][j], below[k][j], at_most[k][j] - below[k][j])
            continue
        low, before = (values[k][j - 1], at_most[k][j - 1]) if j > 0 else (-1.0, 0)
        intervals.setdefault(i, []).append((low, prev_float32(values[k][j]), before, [(k, rank)]))
    if not intervals:
        return found  # type: ignore[return-value]
    # Every model with a rank and as many intervals as its most ranks, whether or not
    # they were all resolved: one compiled configuration per method, not one per outcome.
    groups = {i: _merge_overlaps(intervals.get(i, [])) for i in sorted({i for i, _ in wanted})}
    models = sorted(groups)
    width = max(Counter(i for i, _ in wanted).values())
    device = xs[0].device
    lows = torch.full((len(models), width), math.inf, device=device)
    highs = torch.full((len(models), width), -math.inf, device=device)
    for s, i in enumerate(models):
        for g, (low, high, _, _) in enumerate(groups[i]):
            lows[s, g], highs[s, g] = low, high
    n = xs[0].numel()
    masks = [torch.zeros(_round_up(n, 8), dtype=torch.int8, device=device) for _ in models]
    run(kernels.mark_ranges_, [m[:n] for m in masks], [b, *(xs[i] for i in models)], lows, highs, width=width)
    for s, i in enumerate(models):
        if not groups[i]:
            continue
        index = _sparse_nonzero(masks[s])
        codes = masks[s][index]
        mags = kernels.magnitudes(xs[i][index], None if b is None else b[index]).cpu()
        for g, (_, _, before, ranks) in enumerate(groups[i]):
            candidates = mags[(codes == g + 1).cpu()]
            for k, rank in ranks:
                t = float(torch.kthvalue(candidates, rank - before).values)
                found[k] = Threshold(t, before + int((candidates < t).sum()), int((candidates == t).sum()))
    return found  # type: ignore[return-value]


def _merge_overlaps(intervals: list[tuple[float, float, int, list[tuple[int, int]]]]
                    ) -> list[tuple[float, float, int, list[tuple[int, int]]]]:
    """(low, high, #(≤ low), ranks) intervals of one model, overlapping ones merged (two ranks
    between the same pivots): each entry then falls in at most one, and one int8 code names it."""
    merged: list[tuple[float, float, int, list[tuple[int, int]]]] = []
    for low, high, before, ranks in sorted(intervals, key=lambda iv: iv[0]):
        if merged and low < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], high), last[2], last[3] + ranks)
        else:
            merged.append((low, high, before, list(ranks)))
    return merged


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _sparse_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """The indices of a mostly-zero int8 mask (length a multiple of 8): the nonzero 8-byte
    words first, then the bytes within them; twice as fast as `nonzero` over every byte."""
    words = mask.view(torch.int64).nonzero().view(-1)
    within = mask.view(-1, 8)[words].nonzero()
    return words[within[:, 0]] * 8 + within[:, 1]


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
    run(kernels.mark_ranges_, [mask], [b, x], torch.tensor([[low]], device=x.device),
        torch.tensor([[high]], device=x.device), width=1)
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
