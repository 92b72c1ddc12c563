"""Sparsification of task vectors, and the generalized task-arithmetic mix built on it.

Shared by ties, dare_linear/dare_ties, della/della_linear and breadcrumbs/breadcrumbs_ties
(merging/methods/), which say per model what to keep with a rule from `merging.keep_rules`.
On CPU, when the fused kernels are built (`merging.native`), big tensors are merged by them
in a counting pass per model and one mixing pass; this module is the torch code that runs
everywhere else (GPUs, small tensors, DELLA on tensors above 2-D) and that the kernels are
tested against. The semantics are mergekit 0.1.5's (mergekit/sparsify.py and
merge_methods/generalized_task_arithmetic.py); the implementation differs where mergekit
sorts whole tensors or leaves the result to an unstable sort:

- Magnitude selection never sorts the tensor. The k-th magnitude is found by selection
  (`kth_smallest`: a sorted, evenly strided sample brackets it, counting passes check and
  narrow the bracket, torch.kthvalue finishes on the few elements left), and the count kept
  is exact: every element strictly beyond the threshold and, of the elements equal to it,
  the first ones in index order. mergekit takes a window of an unstable argsort, so its
  choice among equal magnitudes is arbitrary; with distinct magnitudes both select the same
  elements. (Deltas of bf16 checkpoints take few distinct values, so ties at the threshold
  are the rule there, not the exception.)
- Masks are applied in place with hardshrink (x is kept iff |x| > λ) in float32. Big
  temporaries are allocated once per merge call and reused (see `Workspace`).
- A scalar rescale (L1, or 1/density) is not applied to the delta: the sparsifier returns
  the factor and the mix folds it into that model's coefficient, saving a pass.
- DELLA ranks within a row by a histogram of binned magnitudes (keep_rules.DELLA_BINS), not
  a sort: each element gets its bin's mean rank, which is the exact rank where no two
  magnitudes share a bin (`della_rank_norm`).

`rescale_norm` names how a rescale (rescale: true) restores the scale of a sparsified delta:
"l1" (mergekit): multiply by ‖δ‖₁ / ‖δ̂‖₁, skipped when either is below 1e-7;
"inverse_density" (the DARE paper): divide each kept entry by its keep probability (1/density;
DELLA: the entry's own probability), which makes DARE and DELLA unbiased in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from merging.finite import NonFiniteMergeError, all_finite
from merging.keep_rules import (DELLA_BINS, DELLA_SHIFT, RESCALE_EPS, DellaDrop, KeepRule, RandomDrop, RankWindow,
                                TopK, check_della, model_seed, prev_float32, prime_at_least, top_k_count,
                                uniform_draws, window_ranks)
from merging.native import ops as native_ops
from merging.native import task_vectors as native

RESCALE_NORMS = ("l1", "inverse_density")
_DIRECT_SELECT = 1 << 18      # tensors up to this size use torch.kthvalue on all elements
_SELECT_SAMPLE = (1 << 14, 1 << 16)  # sample size bounds (n/256 between them) for the bracket
_BRACKET_SIGMAS = 5.0         # bracket half-width in binomial standard deviations
_ROW_BLOCK = 1 << 18          # DELLA works through rows in blocks of about this many elements


class Workspace:
    """Scratch buffers for one merge call, reused across models and passes.

    A fresh multi-megabyte CPU allocation is page-faulted in on first touch, which costs
    several times a pass over it, so each temporary is allocated once and handed out again
    (as a view of the size asked for) whenever it is free. A buffer that is needed only
    later (the output) can be lent out meanwhile (`lend`), as bool scratch for instance.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._loans: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int] | int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        numel = math.prod(shape)
        loan = self._loans.get((name, dtype))
        if loan is not None and loan.numel() >= numel:
            return loan[:numel].view(shape)
        buf = self._buffers.get((name, dtype))
        if buf is None or buf.numel() < numel:
            buf = self._buffers[(name, dtype)] = torch.empty(numel, dtype=dtype, device=self.device)
        return buf[:numel].view(shape)

    def lend(self, storage: torch.Tensor) -> None:
        """Serve the bool buffers from `storage` (a contiguous tensor) until `end_loans`."""
        raw = storage.view(-1).view(torch.bool)
        half = raw.numel() // 2
        self._loans = {("select", torch.bool): raw[:half], ("select2", torch.bool): raw[half : 2 * half]}

    def end_loans(self) -> None:
        self._loans = {}


def task_vector_params(*, normalize: bool, rescale: bool) -> dict[str, bool | float | str]:
    """Shared parameters of every generalized task-arithmetic method, with mergekit's defaults."""
    return {"int8_mask": False, "normalize": normalize, "rescale": rescale, "lambda": 1.0, "rescale_norm": "l1"}


def rescale_mode(rescale: bool, rescale_norm: str) -> str | None:
    """The rescale to apply (None when rescale is off); rejects unknown norms either way."""
    if rescale_norm not in RESCALE_NORMS:
        raise ValueError(f"rescale_norm must be one of {', '.join(RESCALE_NORMS)}; got {rescale_norm!r}")
    return rescale_norm if rescale else None


def check_per_model(tensors: Sequence[torch.Tensor], **params: Sequence[float]) -> None:
    """Per-model parameters must have one value per merged tensor."""
    for name, values in params.items():
        if len(values) != len(tensors):
            raise ValueError(f"{name}: expected {len(tensors)} values (one per model), got {len(values)}")


# ---------------------------------------------------------------------------------------
# The mix
# ---------------------------------------------------------------------------------------

def merge_task_vectors(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weight: Sequence[float],
    rules: Sequence[KeepRule | None] | None,
    consensus: bool,
    normalize: bool,
    lambda_: float,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Generalized task arithmetic (mergekit's GeneralizedTaskArithmeticMerge).

    δ_i = keep_i(θ_i − θ_base) · s_i (keep_i = rules[i], s_i its rescale factor), then

    - consensus (TIES sign election): γ = sgn Σ_i w_i δ_i with 0 counted as +,
      m_i = [sgn(w_i δ_i) = γ] (a zero entry never agrees),
      mixed = Σ_i m_i w_i δ_i, D = Σ_i m_i w_i elementwise with 0 → 1;
    - otherwise: mixed = Σ_i w_i δ_i, D = Σ_i w_i with |D| < 1e-8 → 1;

    θ = θ_base + λ · mixed / D, or θ_base + λ · mixed when not normalize. Inputs may be in
    any float dtype; the result is in `out_dtype` (float32 when None). A NaN/inf result
    raises NonFiniteMergeError.
    """
    rules = list(rules) if rules is not None else [None] * len(tensors)
    check_per_model(tensors, weight=weight, rules=rules)
    out_dtype = out_dtype or torch.float32
    if tensors and native_ops.applies([base, *tensors]) and native.supports(rules, base.dim()):
        merged, bad = native.merge(tensors, base, weight=weight, rules=rules, consensus=consensus,
                                   normalize=normalize, lambda_=lambda_, out_dtype=out_dtype)
        if bad:
            raise NonFiniteMergeError(f"{bad} merged values are NaN or inf")
        return merged
    merged = _merge_torch([t.float() for t in tensors], base.float(), weight=weight, rules=rules,
                          consensus=consensus, normalize=normalize, lambda_=lambda_)
    if out_dtype != torch.float32:
        merged = merged.to(out_dtype)  # (checked after the cast: float16 overflows)
    if not all_finite(merged):
        raise NonFiniteMergeError("merged values are NaN or inf")
    return merged


def apply_rule_(rule: KeepRule | None, model: int, delta: torch.Tensor, ws: Workspace) -> float:
    """Sparsify a float32 contiguous delta in place by `rule`; returns its rescale factor."""
    if rule is None:
        return 1.0
    if isinstance(rule, TopK):
        return magnitude_(delta, rule.density, rule.rescale_norm, ws)
    if isinstance(rule, RankWindow):
        return magnitude_outliers_(delta, rule.density, rule.gamma, rule.rescale_norm, ws)
    if isinstance(rule, RandomDrop):
        return bernoulli_(delta, rule.density, rule.rescale_norm, model_seed(rule.seed, model), ws)
    if isinstance(rule, DellaDrop):
        return della_magprune_(delta, rule.density, rule.epsilon, rule.rescale_norm, model_seed(rule.seed, model), ws)
    raise TypeError(f"unknown keep rule {rule!r}")


def _merge_torch(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weight: Sequence[float],
    rules: Sequence[KeepRule | None],
    consensus: bool,
    normalize: bool,
    lambda_: float,
) -> torch.Tensor:
    """merge_task_vectors on float32 tensors with torch ops."""
    if not tensors:
        return base.clone()
    ws = Workspace(base.device)
    # The output is allocated first and lends its memory to the sparsifiers' bool masks
    # until it is needed, which saves allocating (page-faulting) those separately.
    out = torch.empty(base.shape, dtype=base.dtype, device=base.device)
    ws.lend(out)
    if not consensus:
        divisor = float(sum(weight)) if normalize else 1.0
        if abs(divisor) < 1e-8:
            divisor = 1.0
        delta = torch.empty_like(out)
        for i, (tensor, w) in enumerate(zip(tensors, weight)):
            torch.sub(tensor, base, out=delta)
            scale = apply_rule_(rules[i], i, delta, ws)
            coef = float(lambda_) * float(w) * scale / divisor
            if i == 0:
                ws.end_loans()
                torch.add(base, delta, alpha=coef, out=out)
            elif coef != 0.0:
                out.add_(delta, alpha=coef)
        return out

    # Sign election needs every sparsified delta before any mask: keep them all.
    deltas: list[torch.Tensor] = []
    coefs: list[float] = []
    for i, (tensor, w) in enumerate(zip(tensors, weight)):
        delta = torch.sub(tensor, base).contiguous()
        scale = apply_rule_(rules[i], i, delta, ws)
        deltas.append(delta)
        coefs.append(float(w) * scale)
    ws.end_loans()
    live = [(d, c, float(w)) for d, c, w in zip(deltas, coefs, weight) if c != 0.0]
    if not live:  # every weighted delta is zero: nothing agrees with the elected sign
        return out.copy_(base)

    sign = out
    torch.mul(live[0][0], live[0][1], out=sign)
    for d, c, _ in live[1:]:
        sign.add_(d, alpha=c)
    # γ = ±1, +1 where the sum is ≥ 0. copysign gives −1 for a −0.0 sum, which arises only
    # when every weighted delta there is ±0; no entry agrees with either sign then.
    torch.copysign(torch.ones((), dtype=sign.dtype, device=sign.device), sign, out=sign)

    divisor: torch.Tensor | None = None
    mixed: torch.Tensor | None = None
    for d, c, w in live:
        # Entries of w_i δ_i that agree with γ are exactly the positive entries of
        # sgn(c_i) γ δ_i; their contribution c_i δ_i equals |c_i| γ relu(sgn(c_i) γ δ_i).
        d.mul_(sign)
        if c < 0:
            d.neg_()
        d.clamp_(min=0.0)
        if mixed is None:
            if normalize:  # the sparsifiers' scratch buffer is free now
                divisor = torch.gt(d, 0.0, out=ws.get("work", d.shape))
                if w != 1.0:
                    divisor.mul_(w)
            mixed = d.mul_(abs(c))
        else:
            mixed.add_(d, alpha=abs(c))
            if divisor is not None:
                divisor.add_(d.gt_(0.0), alpha=w)
    assert mixed is not None
    if divisor is not None:
        weights = [w for _, _, w in live]
        if min(weights) > 0:
            # D is 0 or ≥ min w where all weights are positive, and mixed is 0 where D is 0.
            divisor.clamp_(min=min(weights))
        else:
            divisor.masked_fill_(divisor == 0, 1.0)
        sign.div_(divisor)
    mixed.mul_(sign)
    return torch.add(base, mixed, alpha=float(lambda_), out=sign)


# ---------------------------------------------------------------------------------------
# Exact rank windows (magnitude, magnitude_outliers)
# ---------------------------------------------------------------------------------------

def _count(mask: torch.Tensor) -> int:
    return int(mask.count_nonzero())


class Selection:
    """The k-th smallest value t of a 1-D tensor, and how many elements are < t and == t."""

    __slots__ = ("value", "n_less", "n_equal")

    def __init__(self, value: float, n_less: int, n_equal: int) -> None:
        self.value, self.n_less, self.n_equal = value, n_less, n_equal


def kth_smallest(values: torch.Tensor, k: int, ws: Workspace | None = None) -> Selection:
    """The k-th smallest (1-based) of 1-D `values`, exactly, without sorting them.

    Big tensors are not handed to torch.kthvalue whole (it copies them with int64 indices
    and costs tens of passes). A sorted, evenly strided sample gives a bracket (lo, hi]
    a few binomial standard deviations wide; counting passes (#values ≤ v) check it and,
    while the sample says the bracket still holds many elements (heavy ties: deltas of bf16
    checkpoints take few distinct values), narrow it at sample values. If t is a heavily
    tied value the counts alone identify it; otherwise the few elements left inside go
    through torch.kthvalue. A sample that misses (structured data) only widens the bracket.
    """
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is out of range for {n} elements")
    if n <= _DIRECT_SELECT:
        t = float(torch.kthvalue(values, k).values)
        return Selection(t, _count(values < t), _count(values == t))
    ws = ws or Workspace(values.device)
    stride = prime_at_least(n // min(max(n // 256, _SELECT_SAMPLE[0]), _SELECT_SAMPLE[1]))
    sample = torch.sort(values[stride // 2 :: stride]).values
    m = sample.numel()
    limit = max(_DIRECT_SELECT, n // 16)  # elements we are willing to extract

    def sample_index(v: float, right: bool) -> int:
        return int(torch.searchsorted(sample, torch.tensor([v], dtype=sample.dtype, device=sample.device),
                                      right=right))

    # Two bool buffers hold #(values ≤ lo) and #(values ≤ hi) masks (≤ → < once t < hi is
    # known) while they are valid, so that the final extraction can reuse them.
    below_mask = ws.get("select", n, torch.bool)
    upper_mask = ws.get("select2", n, torch.bool)
    q = k / n
    half = _BRACKET_SIGMAS * math.sqrt(m * q * (1.0 - q)) + 2.0
    j_lo, j_hi = math.floor(q * m - half), math.ceil(q * m + half)
    lo = float(sample[j_lo]) if j_lo >= 0 else -math.inf
    hi = float(sample[j_hi]) if j_hi < m else math.inf
    hi_excluded = False  # t < hi is known; f_hi and upper_mask then count values < hi
    if lo == hi:  # the bracket collapsed onto one heavily tied value v: two counts may settle it
        n_less = _count(torch.lt(values, lo, out=below_mask))
        n_upto = _count(torch.le(values, lo, out=upper_mask))
        if n_less < k <= n_upto:
            return Selection(lo, n_less, n_upto - n_less)
        if k <= n_less:  # t < v
            lo, f_lo, f_hi, hi_excluded = -math.inf, 0, n_less, True
            upper_mask, below_mask = below_mask, upper_mask
            lo_valid, hi_valid = False, True
        else:  # t > v
            f_lo, hi, f_hi = n_upto, math.inf, n
            below_mask, upper_mask = upper_mask, below_mask
            lo_valid, hi_valid = True, False
    else:
        lo_valid, hi_valid = lo > -math.inf, hi < math.inf
        f_lo = _count(torch.le(values, lo, out=below_mask)) if lo_valid else 0
        f_hi = _count(torch.le(values, hi, out=upper_mask)) if hi_valid else n
        if k <= f_lo:  # the sample missed low: look in (−inf, lo]
            hi, f_hi, lo, f_lo = lo, f_lo, -math.inf, 0
            upper_mask, below_mask = below_mask, upper_mask
            lo_valid, hi_valid = False, lo_valid
        elif k > f_hi:  # missed high: (hi, inf)
            lo, f_lo, hi, f_hi = hi, f_hi, math.inf, n
            below_mask, upper_mask = upper_mask, below_mask
            lo_valid, hi_valid = hi_valid, False
    # Invariant: f_lo = #(values ≤ lo) < k ≤ f_hi = #(values ≤ hi), or #(values < hi).
    while True:
        first = sample_index(lo, True)       # sample[first:below_hi] lies in (lo, hi)
        below_hi = sample_index(hi, False)
        end = below_hi if hi_excluded else sample_index(hi, True)
        if (end - first) * n <= limit * m or below_hi <= first:
            break
        frac = (k - f_lo) / max(1, f_hi - f_lo)
        pivot = float(sample[first + min(below_hi - first - 1, int(frac * (end - first)))])
        count = _count(torch.le(values, pivot, out=below_mask))
        if count < k:
            lo, f_lo, lo_valid = pivot, count, True
        else:  # the mask just computed is the new upper one; the old lo's is lost
            hi, f_hi, hi_excluded = pivot, count, False
            below_mask, upper_mask = upper_mask, below_mask
            lo_valid, hi_valid = False, True
    if not hi_excluded and hi < math.inf and end - below_hi >= 2:  # hi is tied in the sample
        n_less = _count(torch.lt(values, hi, out=upper_mask))
        if n_less < k:
            return Selection(hi, n_less, f_hi - n_less)
        f_hi, hi_excluded, hi_valid = n_less, True, True
    # Few elements are left in (lo, hi] (or (lo, hi)): select among them.
    if lo > -math.inf and not lo_valid:
        torch.le(values, lo, out=below_mask)
    if hi < math.inf and not hi_valid:
        (torch.lt if hi_excluded else torch.le)(values, hi, out=upper_mask)
    if lo > -math.inf and hi < math.inf:
        candidates = values[upper_mask.logical_and_(below_mask.logical_not_())]
    elif lo > -math.inf:
        candidates = values[below_mask.logical_not_()]
    elif hi < math.inf:
        candidates = values[upper_mask]
    else:
        candidates = values
    t = float(torch.kthvalue(candidates, k - f_lo).values)
    return Selection(t, f_lo + _count(candidates < t), _count(candidates == t))


def _nth_true(mask: torch.Tensor, nth: int) -> int:
    """Index of the nth (1-based) True of a 1-D bool tensor, by bisection on counts (about
    one pass in all, and few kernel launches), then `nonzero` on the last small piece: ties
    can number in the millions, and listing them all would cost far more."""
    offset, size = 0, mask.numel()
    while size > (1 << 16):
        half = size // 2
        left = _count(mask[offset : offset + half])
        if nth <= left:
            size = half
        else:
            nth, offset, size = nth - left, offset + half, size - half
    hits = mask[offset : offset + size].nonzero()
    if nth > hits.shape[0]:
        raise ValueError("fewer True entries than requested")
    return offset + int(hits[nth - 1])


def _boundary(mags: torch.Tensor, rank: int, descending: bool, ws: Workspace) -> tuple[int, float, float]:
    """Where rank `rank` (0 < rank < n) falls, as (cut, λ_head, λ_tail).

    Elements are ranked by magnitude (ascending, or descending) with ties in index order.
    The elements of rank < `rank` are, in the index range [0, cut), those with |x| ≤ λ_head
    (ascending) or |x| > λ_head (descending), and in [cut, n) likewise with λ_tail: the
    thresholds differ by one float32 step so that exactly the right number of the elements
    equal to the k-th magnitude t fall on each side.
    """
    n = mags.numel()
    sel = kth_smallest(mags, rank if not descending else n - rank + 1, ws)
    t = sel.value
    ranked_before = sel.n_less if not descending else n - sel.n_less - sel.n_equal
    need = rank - ranked_before  # how many of the elements equal to t rank below `rank`
    cut = n
    if need < sel.n_equal and t != 0.0:  # (ties at 0 stay 0 whichever side they fall on)
        cut = _nth_true(torch.eq(mags, t, out=ws.get("select", n, torch.bool)), need) + 1
    prev_t = prev_float32(t)
    return (cut, t, prev_t) if not descending else (cut, prev_t, t)


def _hardshrink_(x: torch.Tensor, lam: float) -> None:
    """Zero the entries with |x| ≤ lam, in place (keep the others)."""
    if x.numel():
        torch.ops.aten.hardshrink.out(x, lam, out=x)


def _zero_above_(x: torch.Tensor, lam: float, tmp: torch.Tensor) -> None:
    """Zero the entries with |x| > lam, in place: x − hardshrink(x, lam) is exact."""
    if x.numel():
        torch.ops.aten.hardshrink.out(x, lam, out=tmp)
        x.sub_(tmp)


def keep_rank_window_(
    values: torch.Tensor, start: int, stop: int, *, descending: bool = False, ws: Workspace | None = None
) -> torch.Tensor:
    """Zero, in place, every entry of `values` whose magnitude rank is outside [start, stop).

    Ranks run from 0 by ascending magnitude (descending: by descending magnitude), ties
    broken by index (flattened, row-major), so exactly stop − start entries survive. Used
    with descending ranks [0, k) for magnitude (top-k) pruning and with ascending ranks for
    Model Breadcrumbs' window. `values` must be contiguous.
    """
    ws = ws or Workspace(values.device)
    flat = values.view(-1)
    n = flat.numel()
    start, stop = max(0, start), min(n, stop)
    if start >= stop:
        flat.zero_()
        return values
    mags = torch.abs(flat, out=ws.get("work", n))
    lower = _boundary(mags, start, descending, ws) if start > 0 else None
    upper = _boundary(mags, stop, descending, ws) if stop < n else None
    tmp = mags  # the magnitudes are not needed any more
    # Elements ranked below a boundary are the small ones when ascending, the big ones when
    # descending; below `start` must go, at or above `stop` must go.
    for boundary, drop_below in ((lower, True), (upper, False)):
        if boundary is None:
            continue
        cut, lam_head, lam_tail = boundary
        zero_small = drop_below != descending
        for part, lam in ((flat[:cut], lam_head), (flat[cut:], lam_tail)):
            if zero_small:
                _hardshrink_(part, lam)
            else:
                _zero_above_(part, lam, tmp[: part.numel()])
    return values


# ---------------------------------------------------------------------------------------
# Sparsifiers: in place on a float32 contiguous delta, returning the rescale factor
# ---------------------------------------------------------------------------------------

def _l1(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x, 1))


def _scalar_rescale(rescale_norm: str | None, before: float, delta: torch.Tensor, density: float) -> float:
    if rescale_norm == "l1":
        after = _l1(delta)
        return before / after if before >= RESCALE_EPS and after >= RESCALE_EPS else 1.0
    if rescale_norm == "inverse_density":
        return 1.0 / density
    return 1.0


def magnitude_(delta: torch.Tensor, density: float, rescale_norm: str | None = None,
               ws: Workspace | None = None) -> float:
    """TIES trim: keep the k = max(1, ⌊density·n⌋) largest magnitudes (ties in index order).

    density ≥ 1 keeps everything, density ≤ 0 nothing. Returns the rescale factor.
    """
    n = delta.numel()
    if density >= 1 or n == 0:
        return 1.0
    if density <= 0:
        delta.zero_()
        return 1.0
    before = _l1(delta) if rescale_norm == "l1" else 0.0
    keep_rank_window_(delta, 0, top_k_count(density, n), descending=True, ws=ws)
    return _scalar_rescale(rescale_norm, before, delta, density)


def magnitude_outliers_(delta: torch.Tensor, density: float, gamma: float, rescale_norm: str | None = None,
                        ws: Workspace | None = None) -> float:
    """Model Breadcrumbs: drop the ⌊gamma·n⌋ largest magnitudes and enough of the smallest
    to keep ⌊density·n⌋: ascending ranks [n_bot, n_bot + ⌊density·n⌋) survive, with
    n_bot = max(0, n − ⌊density·n⌋ − ⌊gamma·n⌋) (the outlier cut shrinks if it must, so the
    density is met). density ≥ 1 keeps everything (gamma ignored, as in mergekit), density ≤ 0
    nothing. Returns the rescale factor.
    """
    n = delta.numel()
    if density >= 1 or n == 0:
        return 1.0
    if density <= 0:
        delta.zero_()
        return 1.0
    start, stop = window_ranks(RankWindow(density, gamma), n)
    before = _l1(delta) if rescale_norm == "l1" else 0.0
    keep_rank_window_(delta, start, stop, descending=False, ws=ws)
    return _scalar_rescale(rescale_norm, before, delta, density)


def bernoulli_(delta: torch.Tensor, density: float, rescale_norm: str | None = None, seed: int = 0,
               ws: Workspace | None = None) -> float:
    """DARE drop: keep entry i iff u(seed, i) < density, u = keep_rules.uniform_draws (a
    counter-based draw, so the native kernels drop the same entries). Returns the rescale factor."""
    if density >= 1 or delta.numel() == 0:
        return 1.0
    if density <= 0:
        delta.zero_()
        return 1.0
    before = _l1(delta) if rescale_norm == "l1" else 0.0
    flat = delta.view(-1)
    for start in range(0, flat.numel(), _ROW_BLOCK):
        part = flat[start : start + _ROW_BLOCK]
        part.mul_(uniform_draws(seed, start, part.numel(), delta.device).lt_(density))
    return _scalar_rescale(rescale_norm, before, delta, density)


def _della_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows DELLA ranks within, as a 2-D tensor: mergekit ranks along dim 1 (a 1-D
    tensor is one row). A view for ≤ 2-D tensors, a copy otherwise."""
    if x.dim() < 2:
        return x.reshape(1, -1)
    if x.dim() == 2:
        return x
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def della_bins(mags: torch.Tensor) -> torch.Tensor:
    """The bin of each magnitude within its row of a 2-D float32 tensor (int64; see
    keep_rules.DELLA_BINS): bit pattern >> DELLA_SHIFT, counted from DELLA_BINS − 1 below
    the row's largest, 0 for everything lower."""
    keys = (mags.view(torch.int32) & 0x7FFFFFFF) >> DELLA_SHIFT
    floor = keys.amax(dim=1, keepdim=True) - (DELLA_BINS - 1)
    return keys.sub_(floor).clamp_(min=0).long()


def della_bin_ranks(bins: torch.Tensor) -> torch.Tensor:
    """Per row and bin, the normalized mean rank of the bin's elements, (2·below + count − 1)
    / (2(L − 1)) in float64 (0.5 for rows of one element, mergekit's 0/0): the exact
    rank_norm of an element alone in its bin, the average of its members' otherwise."""
    rows, length = bins.shape
    counts = torch.zeros(rows, DELLA_BINS, dtype=torch.int64, device=bins.device)
    counts.scatter_add_(1, bins, torch.ones_like(bins))
    if length == 1:
        return torch.full(counts.shape, 0.5, dtype=torch.float64, device=bins.device)
    below = counts.cumsum(1).sub_(counts)
    return below.mul_(2).add_(counts).sub_(1).double().mul_(1.0 / (2.0 * (length - 1)))


def della_rank_norm(mags: torch.Tensor) -> torch.Tensor:
    """Normalized ascending magnitude rank of each element within its row of a 2-D tensor,
    in [0, 1], at bin resolution (`della_bin_ranks`): mergekit's rank_norm when no two
    magnitudes of a row share a bin."""
    bins = della_bins(mags.float().contiguous())
    return della_bin_ranks(bins).gather(1, bins).float()


def _della_probability_table(bins: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """Keep probability per row and bin, p = (density − ε) + 2ε·r in float64, then float32
    (the arithmetic of della_tables in merging/native/kernels.c, bit for bit)."""
    return della_bin_ranks(bins).mul_(2 * epsilon).add_(density - epsilon).float()


def della_keep_probabilities(tensor: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA MagPrune keep probabilities, shaped like `tensor`: within each row (1-D: the
    tensor), p = (density − ε) + 2ε · rank_norm(|x|), so the smallest magnitude is kept with
    probability density − ε, the largest with density + ε, and the row's mean is density."""
    check_della(density, epsilon)
    rows = _della_rows(tensor.float()).abs()
    bins = della_bins(rows)
    probs = _della_probability_table(bins, density, epsilon).gather(1, bins)
    if tensor.dim() > 2:
        moved = list(tensor.movedim(1, -1).shape)
        return probs.view(moved).movedim(-1, 1).contiguous()
    return probs.view(tensor.shape)


def della_magprune_(delta: torch.Tensor, density: float, epsilon: float, rescale_norm: str | None = None,
                    seed: int = 0, ws: Workspace | None = None) -> float:
    """DELLA MagPrune: keep entry i iff u(seed, i) < p_i, p from `della_keep_probabilities`
    and u = keep_rules.uniform_draws over the row layout's index (the flat index for ≤ 2-D
    tensors), so the native kernel keeps the same entries. Rows are processed in blocks of
    about _ROW_BLOCK elements (bounded temporaries). Returns the rescale factor (1.0 with
    inverse_density, whose per-entry scale 1/p is applied here).
    """
    if density >= 1 or delta.numel() == 0:
        return 1.0
    if density <= 0:
        delta.zero_()
        return 1.0
    check_della(density, epsilon)
    ws = ws or Workspace(delta.device)
    before = _l1(delta) if rescale_norm == "l1" else 0.0
    rows = _della_rows(delta)
    n_rows, length = rows.shape
    block = max(1, _ROW_BLOCK // length)
    for r0 in range(0, n_rows, block):
        part = rows[r0 : r0 + block]
        bins = della_bins(torch.abs(part, out=ws.get("work", part.shape)))
        probs = _della_probability_table(bins, density, epsilon).gather(1, bins)
        draws = uniform_draws(seed, r0 * length, part.numel(), delta.device).view(part.shape)
        part.mul_(draws.lt_(probs))
        if rescale_norm == "inverse_density":
            part.mul_(probs.reciprocal_())
    if delta.dim() > 2:
        moved = list(delta.movedim(1, -1).shape)
        delta.copy_(rows.view(moved).movedim(-1, 1))
    if rescale_norm == "inverse_density":
        return 1.0
    return _scalar_rescale(rescale_norm, before, delta, density)


# ---------------------------------------------------------------------------------------
# Pure versions (new tensor in, new tensor out): mergekit's sparsify functions, for callers
# that want one sparsified task vector rather than a merge
# ---------------------------------------------------------------------------------------

def _copy(tensor: torch.Tensor, rescale_norm: str | None) -> torch.Tensor:
    if rescale_norm is not None:
        rescale_mode(True, rescale_norm)
    return tensor.to(torch.float32, memory_format=torch.contiguous_format, copy=True)


def _applied(delta: torch.Tensor, scale: float) -> torch.Tensor:
    return delta.mul_(scale) if scale != 1.0 else delta


def magnitude(tensor: torch.Tensor, density: float, rescale_norm: str | None = None) -> torch.Tensor:
    """A float32 copy of `tensor` trimmed as by `magnitude_` (TIES), rescaled if asked."""
    delta = _copy(tensor, rescale_norm)
    return _applied(delta, magnitude_(delta, density, rescale_norm))


def magnitude_outliers(tensor: torch.Tensor, density: float, gamma: float = 0.01,
                       rescale_norm: str | None = None) -> torch.Tensor:
    """A float32 copy of `tensor` with Model Breadcrumbs' rank window (`magnitude_outliers_`)."""
    delta = _copy(tensor, rescale_norm)
    return _applied(delta, magnitude_outliers_(delta, density, gamma, rescale_norm))


def bernoulli(tensor: torch.Tensor, density: float, rescale_norm: str | None = None, seed: int = 0) -> torch.Tensor:
    """A float32 copy of `tensor` with DARE's random drop (`bernoulli_`)."""
    delta = _copy(tensor, rescale_norm)
    return _applied(delta, bernoulli_(delta, density, rescale_norm, seed))


def della_magprune(tensor: torch.Tensor, density: float, epsilon: float, rescale_norm: str | None = None,
                   seed: int = 0) -> torch.Tensor:
    """A float32 copy of `tensor` with DELLA's magnitude-ranked random drop (`della_magprune_`)."""
    delta = _copy(tensor, rescale_norm)
    return _applied(delta, della_magprune_(delta, density, epsilon, rescale_norm, seed))
