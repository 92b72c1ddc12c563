"""The passes over memory that the task-vector merges are made of, as plain torch.

Every function here takes flat (1-D) tensors and is written so that torch.compile can fuse
it into one loop (inductor's C++ on CPU, Triton on GPUs): inputs are read in their stored
dtype and upcast in registers, keep rules are evaluated per element from a few scalars,
and nothing the size of a tensor is materialized in between. `merging.compile.run` calls
them compiled where a compiler is present and eagerly, chunk by chunk, where not: the
same code either way, so the two give the same results (tests compare them bit by bit).

A keep rule reaches a kernel as a row of `fparams` (float32) and `iparams` (int64) per
model and a kind per model, which is static (the compiled code specializes on it):

    kind "all":    keep every entry
    kind "window": keep |d| > low(i) and |d| ≤ high(i), where low(i) = f[LO_HEAD] for
                   i < k[LO_CUT], f[LO_TAIL] from there on (likewise high): a magnitude
                   threshold per side, with ties at it split in index order
    kind "random": keep iff u(seed, i) < f[DENSITY] (DARE)
    kind "della":  keep iff u(seed, i) < p(row, bin(|d|)), p from a per-row table, and
                   with f[INVERSE] = 1 scale kept entries by 1/p (DELLA)
    kind "mask":   keep iff bit k[MASK_BIT] of the packed int8 mask is set (DARE's and DELLA's
                   draws, written by the L1 pass that needed them first, one byte per entry
                   for up to MAX_MASKED models, so the mix does not draw again)

i is the entry's flat index (chunks pass their `start`), u the counter-based draw of
`draw_uniform`, the same bits on every device and for every chunking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Columns of fparams / iparams.
LO_HEAD, LO_TAIL, HI_HEAD, HI_TAIL, DENSITY, COEF, WEIGHT, INVERSE = range(8)
LO_CUT, HI_CUT, SEED, MASK_BIT = range(4)
N_FPARAMS, N_IPARAMS = 8, 4
MAX_MASKED = 7   # models whose draws one int8 mask holds, a bit each (127 at most: no sign)

# DELLA ranks magnitudes within a row at the resolution of the float32 bit pattern >> 19
# (exponent and 4 mantissa bits: 16 bins per binade, each bin spanning at most 6.25 % of its
# values), over the DELLA_BINS bins ending at the row's largest magnitude; smaller ones share
# bin 0. Every element gets the mean rank of its bin: ranking is a histogram per row, no sort.
DELLA_BINS = 256
DELLA_SHIFT = 19

_M32 = 0xFFFFFFFF


def draw_uniform(seed: torch.Tensor | int, index: torch.Tensor) -> torch.Tensor:
    """u(seed, i): float32 in [0, 1), multiples of 2⁻²⁴, from a counter-based hash
    (lowbias32 of the int64 index mixed with the 32-bit seed)."""
    h = ((index & _M32) * 0x9E3779B1 & _M32) ^ (seed & _M32)
    h = h ^ (((index >> 32) * 0x85EBCA77) & _M32)
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _M32
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & _M32
    h = h ^ (h >> 16)
    return (h >> 8).to(torch.float32) * (2.0**-24)


def della_key(mags: torch.Tensor) -> torch.Tensor:
    """A float32 magnitude's bin key: its bit pattern >> DELLA_SHIFT (int32, monotone in it)."""
    return (mags.view(torch.int32) & 0x7FFFFFFF) >> DELLA_SHIFT


def della_bin(mags: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """The bin of float32 magnitudes given their row's floor key (row max key − DELLA_BINS + 1)."""
    return (della_key(mags) - floor).clamp(min=0)


def row_of(index: torch.Tensor, row_len: torch.Tensor) -> torch.Tensor:
    """index // row_len, in float64: CPUs have no vector integer division, and (i + ½)/L
    rounds to the right row for any i < 2⁵² / L."""
    return ((index.double() + 0.5) / row_len.double()).floor().long()


def della_lookup(table: torch.Tensor, floors: torch.Tensor, row_len: torch.Tensor, mags: torch.Tensor,
                 index: torch.Tensor) -> torch.Tensor:
    """The per-row, per-bin `table` value of each entry (magnitude `mags`, flat `index`)."""
    row = row_of(index, row_len)
    return table[row * DELLA_BINS + della_bin(mags, floors[row])]


def _delta(x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return x.float() if b is None else x.float() - b.float()


def magnitudes(x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """|x − b| in float32 (|x| without a base)."""
    return _delta(x, b).abs()


def _index(start: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(like.numel(), device=like.device, dtype=torch.int64) + start


def kept(d: torch.Tensor, index: torch.Tensor, kind: str, f: torch.Tensor, k: torch.Tensor,
         della: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """d with the entries model's rule drops set to 0 (DELLA inverse: kept ones scaled by 1/p)."""
    if kind == "all":
        return d
    if kind == "mask":  # a multiply: a compiled CPU loop vectorizes it, not a select on int8 (2.6x)
        assert mask is not None
        return d * ((mask.to(torch.int32) >> k[MASK_BIT]) & 1).float()
    if kind == "window":
        a = d.abs()
        low = torch.where(index < k[LO_CUT], f[LO_HEAD], f[LO_TAIL])
        high = torch.where(index < k[HI_CUT], f[HI_HEAD], f[HI_TAIL])
        return torch.where((a > low) & (a <= high), d, 0.0)
    if kind == "random":
        return torch.where(_drawn_keep(d, index, kind, f, k, della), d, 0.0)
    if kind == "della":
        assert della is not None
        p = della_lookup(*della, d.abs(), index)
        return torch.where(draw_uniform(k[SEED], index) < p, torch.where(f[INVERSE] > 0, d / p, d), 0.0)
    raise ValueError(f"unknown keep kind {kind!r}")


def mix_(out: torch.Tensor, inputs: Sequence[torch.Tensor], fparams: torch.Tensor, iparams: torch.Tensor,
         dellas: Sequence[tuple | None], lambda_: torch.Tensor, start: int, *, kinds: tuple[str, ...],
         consensus: bool, normalize: bool) -> torch.Tensor:
    """Generalized task arithmetic into `out`; returns how many merged values are NaN/inf.

    Without consensus: θ = θ_base + Σ_i c_i keep_i(δ_i), c_i = f[COEF] (λ, weight, rescale
    and divisor folded in by the caller). With consensus (TIES sign election), v_i = c_i
    keep_i(δ_i) with c_i = w_i s_i: γ = + where Σ_i v_i ≥ 0, entries agree where v_i has
    γ's sign (a zero never agrees), θ = θ_base + λ Σ_agreeing v_i / D, D = Σ_agreeing w_i
    (0 → 1) if normalize else 1.
    """
    b, xs = inputs[0], inputs[1 : 1 + len(kinds)]
    packed = inputs[1 + len(kinds)] if "mask" in kinds else None
    index = _index(start, out)
    base = b.float()
    vs = [kept(x.float() - base, index, kind, fparams[m], iparams[m], dellas[m], packed) * fparams[m, COEF]
          for m, (x, kind) in enumerate(zip(xs, kinds))]
    if not consensus:
        merged = base
        for v in vs:
            merged = merged + v
    else:
        total = vs[0]
        for v in vs[1:]:
            total = total + v
        positive = total >= 0
        mixed = torch.zeros_like(base)
        divisor = torch.zeros_like(base)
        for m, v in enumerate(vs):
            agree = torch.where(positive, v > 0, v < 0)
            mixed = mixed + torch.where(agree, v, 0.0)
            if normalize:
                divisor = divisor + torch.where(agree, fparams[m, WEIGHT], 0.0)
        if normalize:
            mixed = mixed / torch.where(divisor == 0, 1.0, divisor)
        merged = base + lambda_ * mixed
    out.copy_(merged.to(out.dtype))
    return count_unrepresentable(merged, out.dtype)


def count_unrepresentable(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """How many float32 `values` are NaN or become ±inf when stored as `dtype` (a float32
    count: exact up to 2²⁴, and never 0 when one is; a float sum vectorizes). Computed
    on the float32 values (compiled code does not round intermediates to the stored
    dtype, so testing the cast result would miss a float16 overflow): a value rounds to
    inf from half an ulp above the dtype's largest finite value."""
    return torch.where(values.abs() < overflow_limit(dtype), 0.0, 1.0).sum()


def overflow_limit(dtype: torch.dtype) -> float:
    """The smallest magnitude that rounds to inf in `dtype` (inf for float32 and wider)."""
    if torch.finfo(dtype).bits >= 32:
        return math.inf
    finfo = torch.finfo(dtype)
    ulp_at_max = 2.0 ** math.floor(math.log2(finfo.max)) * finfo.eps
    return finfo.max + ulp_at_max / 2


def weighted_sum_(out: torch.Tensor, xs: Sequence[torch.Tensor], coefs: torch.Tensor, start: int) -> torch.Tensor:
    """out = Σ_i coefs[i]·xs[i] (x_0·c_0, then adds in input order); returns the NaN/inf count."""
    merged = xs[0].float() * coefs[0]
    for i in range(1, len(xs)):
        merged = merged + xs[i].float() * coefs[i]
    out.copy_(merged.to(out.dtype))
    return count_unrepresentable(merged, out.dtype)


def task_vector_sum_(out: torch.Tensor, inputs: Sequence[torch.Tensor], coefs: torch.Tensor,
                     start: int) -> torch.Tensor:
    """out = b + Σ_i coefs[i]·(x_i − b) (inputs: b, then the models; the deltas summed in
    model order before the base is added back, as SLERP of task vectors writes it);
    returns the NaN/inf count."""
    base = inputs[0].float()
    total = (inputs[1].float() - base) * coefs[0]
    for i in range(2, len(inputs)):
        total = total + (inputs[i].float() - base) * coefs[i - 1]
    merged = total + base
    out.copy_(merged.to(out.dtype))
    return count_unrepresentable(merged, out.dtype)


def dot_products(out: None, inputs: Sequence[torch.Tensor | None], start: int, *,
                 pairs: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """⟨d_i, d_j⟩ for each (i, j) in pairs, d_i = x_i − b (x_i when b is None; inputs: b or
    None, then the models), float32 sums, in one pass that reads every input once: what
    the SLERP family's angles and norms are made of. The compiled reduction accumulates in
    vector lanes and threads (like `l1_norms`)."""
    b, *xs = inputs
    ds = [_delta(x, b) for x in xs]
    return torch.stack([(ds[i] * ds[j]).sum() for i, j in pairs])


def l1_norms(out: torch.Tensor | None, inputs: Sequence[torch.Tensor | None], fparams: torch.Tensor,
             iparams: torch.Tensor, dellas: Sequence[tuple | None], start: int, *,
             kinds: tuple[str, ...], masked: tuple[bool, ...]) -> torch.Tensor:
    """Per model, (‖δ‖₁, ‖keep(δ)‖₁) for an L1 rescale, in one pass that reads the base once
    (inputs: b or None, then the models; float32 (M, 2)); where out is given, each model
    with masked[m] sets bit iparams[m, MASK_BIT] of it (int8) where its draw keeps the
    entry, for the mix to read instead of drawing again. The compiled reduction
    accumulates in vector lanes and threads: 4e-8 relative error on 28M entries against a
    float64 sum, at half its cost."""
    b, *xs = inputs
    sums = []
    bits = None
    for m, (x, kind) in enumerate(zip(xs, kinds)):
        d = _delta(x, b)
        index = _index(start, d)
        if masked[m]:  # an L1 rescale: kept entries are not scaled by 1/p (that is the other rescale)
            keep = _drawn_keep(d, index, kind, fparams[m], iparams[m], dellas[m])
            kept_d = torch.where(keep, d, 0.0)
            bit = torch.where(keep, torch.ones_like(index) << iparams[m, MASK_BIT], 0)
            bits = bit if bits is None else bits + bit
        else:
            kept_d = kept(d, index, kind, fparams[m], iparams[m], dellas[m])
        sums.append(torch.stack([d.abs().sum(), kept_d.abs().sum()]))
    if out is not None and bits is not None:
        out.copy_(bits.to(out.dtype))
    return torch.stack(sums)


def _drawn_keep(d: torch.Tensor, index: torch.Tensor, kind: str, f: torch.Tensor, k: torch.Tensor,
                della: tuple | None) -> torch.Tensor:
    """Whether a random drop (DARE: "random", DELLA: "della") keeps each entry."""
    u = draw_uniform(k[SEED], index)
    if kind == "random":
        return u < f[DENSITY]
    assert kind == "della" and della is not None
    return u < della_lookup(*della, d.abs(), index)


def count_at_most(out: None, inputs: Sequence[torch.Tensor | None], pivots: torch.Tensor, start: int, *,
                  owners: tuple[int, ...], dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """For each row k of pivots (K, P), over the magnitudes |x − b| of model owners[k]:
    #(< p) and #(≤ p) per pivot p, as (K, 2, P) counts of `dtype` (inputs: b or None, then
    the models), in one pass that reads the base once. int32 sums vectorize where int64
    ones do not (3x faster on CPU); callers pass int64 for 2³¹ entries or more."""
    b, *xs = inputs
    mags = [magnitudes(x, b) for x in xs]
    rows = []
    for k, m in enumerate(owners):
        a = mags[m]
        below = [(a < pivots[k, j]).to(dtype).sum(dtype=dtype) for j in range(pivots.shape[1])]
        at_most = [(a <= pivots[k, j]).to(dtype).sum(dtype=dtype) for j in range(pivots.shape[1])]
        rows.append(torch.stack([torch.stack(below), torch.stack(at_most)]))
    return torch.stack(rows)


def count_equal_blocks(inputs: Sequence[torch.Tensor | None], values: torch.Tensor, *, block: int,
                       slots: int) -> torch.Tensor:
    """For each model m and slot j, how many magnitudes |x_m − b| equal values[m, j] in each
    block of `block` entries, as (M, slots, n / block) int32 counts (inputs: b or None, then
    the models; n a multiple of block; a NaN value counts nothing), in one pass that reads
    the base once: where each tie's n-th member lies, to the block, for every tie cut of a
    merge at once."""
    b, *xs = inputs
    counts = []
    for m, x in enumerate(xs):
        a = magnitudes(x, b)
        counts.append(torch.stack([(a == values[m, j]).view(-1, block).to(torch.int32).sum(dim=1, dtype=torch.int32)
                                   for j in range(slots)]))
    return torch.stack(counts)


def mark_ranges_(out: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor | None], lows: torch.Tensor,
                 highs: torch.Tensor, start: int, *, width: int) -> None:
    """out[m] = g + 1 where lows[m, g] < |x_m − b| ≤ highs[m, g], else 0, as int8, for the
    `width` (disjoint; unused ones empty) intervals of each model (inputs: b or None, then
    the models), in one pass that reads the base once. int8, because a compiled CPU loop
    stores it vectorized where it stores bool or uint8 element by element (measured 7 ms
    against 41–62 ms for 32M entries)."""
    b, *xs = inputs
    for m, x in enumerate(xs):
        a = magnitudes(x, b)
        code = torch.zeros_like(a)
        for g in range(width):
            code = code + torch.where((a > lows[m, g]) & (a <= highs[m, g]), float(g + 1), 0.0)
        out[m].copy_(code.to(out[m].dtype))


def della_row_floors(x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Per row of 2-D inputs: the largest magnitude's key − (DELLA_BINS − 1) (int32)."""
    return della_key(magnitudes(x, b)).amax(dim=1) - (DELLA_BINS - 1)


def della_table(counts: torch.Tensor, inverse: torch.Tensor, span: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """DELLA's keep probability per row and bin from the rows' bin counts (rows × DELLA_BINS):
    p = low + span·r with r = (2·below + count − 1)·inverse, the bin's mean normalized rank
    (inverse = 1/(2(L − 1))), in float64, then float32. One pass over a table that can hold
    almost half as many entries as the tensor (rows of 576, 256 bins)."""
    below = counts.cumsum(1) - counts
    return ((below * 2 + counts - 1).double() * inverse * span + low).float()


def della_bins_(out: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, floors: torch.Tensor) -> None:
    """out[r, j] = the bin of entry (r, j) (int64: what `scatter_add_` along the rows takes
    to histogram every row at once, in parallel over rows)."""
    out.copy_(della_bin(magnitudes(x, b), floors.unsqueeze(1)))
