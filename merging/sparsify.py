"""Sparsification of task vectors, and the generalized task-arithmetic mix built on it.

Shared by ties, dare_linear/dare_ties, della/della_linear and breadcrumbs/breadcrumbs_ties
(merging/methods/). The semantics are mergekit 0.1.5's (mergekit/sparsify.py and
merge_methods/generalized_task_arithmetic.py); the implementation differs where mergekit
sorts whole tensors or leaves the result to an unstable sort:

- Magnitude selection never sorts the tensor. The k-th magnitude is found by selection (a
  sorted, evenly strided sample brackets it; torch.kthvalue finishes on the few elements
  inside the bracket), and the count kept is exact: every element strictly beyond the
  threshold and, of the elements equal to it, the first ones in index order. mergekit takes
  a window of an unstable argsort, so its choice among equal magnitudes is arbitrary; with
  distinct magnitudes both select the same elements.
- Masks are applied in place with hardshrink (x is kept iff |x| > λ) in float32. Big
  temporaries are allocated once per merge call and reused (see `Workspace`).
- A scalar rescale (L1, or 1/density) is not applied to the delta: the sparsifier returns
  the factor and the mix folds it into that model's coefficient, saving a pass.
- DELLA's within-row ranks are exact for rows of up to DELLA_EXACT_ROW elements and are
  read off a sorted, evenly strided sample of DELLA_EXACT_ROW magnitudes per row beyond
  that (see `della_rank_norm`).

`rescale_norm` names how a rescale (rescale: true) restores the scale of a sparsified delta:
"l1" (mergekit): multiply by ‖δ‖₁ / ‖δ̂‖₁, skipped when either is below 1e-7;
"inverse_density" (the DARE paper): divide each kept entry by its keep probability (1/density;
DELLA: the entry's own probability), which makes DARE and DELLA unbiased in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

RESCALE_NORMS = ("l1", "inverse_density")
RESCALE_EPS = 1e-7            # mergekit: no L1 rescale when either norm is below this
DELLA_EXACT_ROW = 2048        # DELLA ranks are exact in rows up to this long, sampled beyond
_DIRECT_SELECT = 1 << 18      # tensors up to this size use torch.kthvalue on all elements
_SELECT_SAMPLE = 1 << 16      # sample size that brackets the k-th magnitude of bigger ones
_BRACKET_SIGMAS = 5.0         # bracket half-width in binomial standard deviations
_ROW_BLOCK = 1 << 20          # DELLA works through rows in blocks of about this many elements


class Workspace:
    """Scratch buffers for one merge call, reused across models and passes.

    A fresh multi-megabyte CPU allocation is page-faulted in on first touch, which costs
    about three times a copy of it, so each temporary is allocated once and handed out
    again (as a view of the size asked for) whenever it is free.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int] | int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        numel = math.prod(shape)
        buf = self._buffers.get((name, dtype))
        if buf is None or buf.numel() < numel:
            buf = self._buffers[(name, dtype)] = torch.empty(numel, dtype=dtype, device=self.device)
        return buf[:numel].view(shape)


# A sparsifier gets (model index, that model's float32 contiguous delta, the call's workspace),
# sparsifies the delta in place and returns the factor to scale it by (1.0 for none).
Sparsifier = Callable[[int, torch.Tensor, Workspace], float]


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
    sparsify: Sparsifier | None,
    consensus: bool,
    normalize: bool,
    lambda_: float,
) -> torch.Tensor:
    """Generalized task arithmetic (mergekit's GeneralizedTaskArithmeticMerge).

    δ_i = sparsify(θ_i − θ_base) · s_i (s_i the sparsifier's rescale factor), then

    - consensus (TIES sign election): γ = sgn Σ_i w_i δ_i with 0 counted as +,
      m_i = [sgn(w_i δ_i) = γ] (a zero entry never agrees),
      mixed = Σ_i m_i w_i δ_i, D = Σ_i m_i w_i elementwise with 0 → 1;
    - otherwise: mixed = Σ_i w_i δ_i, D = Σ_i w_i with |D| < 1e-8 → 1;

    θ = θ_base + λ · mixed / D, or θ_base + λ · mixed when not normalize.
    """
    check_per_model(tensors, weight=weight)
    if not tensors:
        return base.clone()
    ws = Workspace(base.device)
    if not consensus:
        divisor = float(sum(weight)) if normalize else 1.0
        if abs(divisor) < 1e-8:
            divisor = 1.0
        out = base.clone(memory_format=torch.contiguous_format)
        delta = torch.empty_like(out)
        for i, (tensor, w) in enumerate(zip(tensors, weight)):
            torch.sub(tensor, base, out=delta)
            scale = sparsify(i, delta, ws) if sparsify is not None else 1.0
            coef = float(lambda_) * float(w) * scale / divisor
            if coef != 0.0:
                out.add_(delta, alpha=coef)
        return out

    # Sign election needs every sparsified delta before any mask: keep them all.
    deltas: list[torch.Tensor] = []
    coefs: list[float] = []
    for i, (tensor, w) in enumerate(zip(tensors, weight)):
        delta = torch.sub(tensor, base).contiguous()
        scale = sparsify(i, delta, ws) if sparsify is not None else 1.0
        deltas.append(delta)
        coefs.append(float(w) * scale)
    live = [(d, c, float(w)) for d, c, w in zip(deltas, coefs, weight) if c != 0.0]
    if not live:  # every weighted delta is zero: nothing agrees with the elected sign
        return base.clone(memory_format=torch.contiguous_format)

    sign = torch.empty_like(deltas[0])
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


def _prev_float32(value: float) -> float:
    """The largest float32 below `value`: |x| > prev(t) ⇔ |x| ≥ t for float32 x."""
    t = torch.tensor(value, dtype=torch.float32)
    return float(torch.nextafter(t, torch.tensor(-math.inf, dtype=torch.float32)))


def _prime_at_least(n: int) -> int:
    """Sampling strides are prime so that they do not alias with row lengths (powers of 2)."""
    n = max(n, 2)
    while any(n % p == 0 for p in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


class Selection:
    """The k-th smallest value t of a 1-D tensor, with what exact rank windows need."""

    __slots__ = ("value", "n_less", "ties")

    def __init__(self, value: float, n_less: int, ties: torch.Tensor) -> None:
        self.value = value      # t
        self.n_less = n_less    # how many elements are < t
        self.ties = ties        # indices of the elements == t, ascending (int64)


def kth_smallest(values: torch.Tensor, k: int, ws: Workspace | None = None) -> Selection:
    """The k-th smallest (1-based) of 1-D `values`, exactly, without sorting them.

    Big tensors are not handed to torch.kthvalue whole (it copies them with int64 indices
    and costs tens of passes): a sorted, evenly strided sample brackets t within a few
    binomial standard deviations, one pass counts the elements below the bracket and finds
    those inside it, and kthvalue runs on those alone. If the deterministic sample misses
    (strongly structured data), the whole tensor is used.
    """
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is out of range for {n} elements")
    if n > _DIRECT_SELECT:
        ws = ws or Workspace(values.device)
        stride = _prime_at_least(n // _SELECT_SAMPLE)
        sample = torch.sort(values[stride // 2 :: stride]).values
        m = sample.numel()
        q = k / n
        half = _BRACKET_SIGMAS * math.sqrt(m * q * (1.0 - q)) + 2.0
        j_lo, j_hi = math.floor(q * m - half), math.ceil(q * m + half)
        lo = float(sample[j_lo]) if j_lo >= 0 else -math.inf
        hi = float(sample[j_hi]) if j_hi < m else math.inf
        inside = torch.ge(values, lo, out=ws.get("select", n, torch.bool))
        below = n - _count(inside)
        inside.logical_and_(torch.le(values, hi, out=ws.get("select2", n, torch.bool)))
        index = inside.nonzero().squeeze(1)  # ascending
        if below < k <= below + index.numel():
            candidates = values[index]
            t = float(sample[j_lo]) if lo == hi else float(torch.kthvalue(candidates, k - below).values)
            return Selection(t, below + _count(candidates < t), index[candidates == t])
    t = float(torch.kthvalue(values, k).values)
    return Selection(t, _count(values < t), (values == t).nonzero().squeeze(1))


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
    t, n_equal = sel.value, sel.ties.numel()
    ranked_before = sel.n_less if not descending else n - sel.n_less - n_equal
    need = rank - ranked_before  # how many of the elements equal to t rank below `rank`
    cut = n if need == n_equal or t == 0.0 else int(sel.ties[need - 1]) + 1  # (ties at 0 stay 0 anyway)
    prev_t = _prev_float32(t)
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
    keep_rank_window_(delta, 0, max(1, int(density * n)), descending=True, ws=ws)
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
    target, n_top = int(density * n), int(gamma * n)
    n_bot = max(0, n - target - n_top)
    before = _l1(delta) if rescale_norm == "l1" else 0.0
    keep_rank_window_(delta, n_bot, n_bot + target, descending=False, ws=ws)
    return _scalar_rescale(rescale_norm, before, delta, density)


def bernoulli_(delta: torch.Tensor, density: float, rescale_norm: str | None = None,
               generator: torch.Generator | None = None, ws: Workspace | None = None) -> float:
    """DARE drop: keep each entry independently with probability density (u < density for
    u ~ U[0, 1) drawn from `generator`). Returns the rescale factor."""
    if density >= 1 or delta.numel() == 0:
        return 1.0
    if density <= 0:
        delta.zero_()
        return 1.0
    ws = ws or Workspace(delta.device)
    before = _l1(delta) if rescale_norm == "l1" else 0.0
    keep = ws.get("work", delta.shape)
    keep.uniform_(0.0, 1.0, generator=generator).lt_(density)  # 1.0 keep / 0.0 drop
    delta.mul_(keep)
    return _scalar_rescale(rescale_norm, before, delta, density)


def check_della(density: float, epsilon: float) -> None:
    if density - epsilon <= 0 or density + epsilon >= 1:
        raise ValueError(f"della: keep probabilities density ± epsilon must lie in (0, 1); "
                         f"got density={density}, epsilon={epsilon}")


def _della_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows DELLA ranks within, as a 2-D tensor: mergekit ranks along dim 1 (a 1-D
    tensor is one row). A view for ≤ 2-D tensors, a copy otherwise."""
    if x.dim() < 2:
        return x.reshape(1, -1)
    if x.dim() == 2:
        return x
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _sample_columns(length: int, device: torch.device) -> torch.Tensor:
    """DELLA_EXACT_ROW column indices spread evenly over a row (midpoints of equal parts)."""
    s = DELLA_EXACT_ROW
    return (torch.arange(s, device=device) * 2 + 1) * length // (2 * s)


def della_rank_norm(mags: torch.Tensor) -> torch.Tensor:
    """Normalized ascending rank of each magnitude within its row of a 2-D tensor, in [0, 1].

    Rows of up to DELLA_EXACT_ROW elements: exactly (rank − 1)/(L − 1) with ties in index
    order, which is mergekit's rank_norm when the magnitudes are distinct. Longer rows: the
    fraction pos/S of a fixed, evenly strided sample of S = DELLA_EXACT_ROW magnitudes of the
    row that lies strictly below the element (torch.searchsorted on the sorted sample), an
    estimate of the exact value with standard error below 1/(2√S) ≈ 0.011 and mean 1/2 over
    the row; only the sample is sorted. A row of one element gets 1/2 (mergekit: 0/0).
    """
    rows, length = mags.shape
    if length == 1:
        return torch.full_like(mags, 0.5)
    if length <= DELLA_EXACT_ROW:
        order = torch.argsort(mags, dim=1, stable=True)
        ranks = torch.empty_like(mags)
        ranks.scatter_(1, order, torch.arange(length, dtype=mags.dtype, device=mags.device).expand(rows, length))
        return ranks.div_(length - 1)
    sample = mags.index_select(1, _sample_columns(length, mags.device)).sort(dim=1).values
    pos = torch.searchsorted(sample, mags.contiguous(), out_int32=True)
    return pos.to(mags.dtype).div_(DELLA_EXACT_ROW)


def della_keep_probabilities(tensor: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA MagPrune keep probabilities, shaped like `tensor`: within each row (1-D: the
    tensor), p = (density − ε) + 2ε · rank_norm(|x|), so the smallest magnitude is kept with
    probability density − ε, the largest with density + ε, and the row's mean is density."""
    check_della(density, epsilon)
    rows = _della_rows(tensor)
    probs = della_rank_norm(rows.abs()).mul_(2 * epsilon).add_(density - epsilon)
    if tensor.dim() > 2:
        moved = list(tensor.movedim(1, -1).shape)
        return probs.view(moved).movedim(-1, 1).contiguous()
    return probs.view(tensor.shape)


def della_magprune_(delta: torch.Tensor, density: float, epsilon: float, rescale_norm: str | None = None,
                    generator: torch.Generator | None = None, ws: Workspace | None = None) -> float:
    """DELLA MagPrune: drop each entry with probability 1 − p, p from `della_keep_probabilities`.

    Rows are processed in blocks of about _ROW_BLOCK elements (bounded temporaries; the
    draws follow row order, so the result does not depend on the block size). For long
    rows without inverse_density, the test u < p(pos) is evaluated in the equivalent form
    |x| > s_(j), s the row's sorted sample and j = ⌊(u − density + ε)·S/(2ε)⌋ (u < p(pos) ⇔
    pos > j ⇔ the (j+1)-th smallest sample value is below |x|): a gather instead of a binary
    search per element, the same mask for the same draws. Returns the rescale factor
    (1.0 with inverse_density, whose per-entry division is done here).
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
    sampled = length > DELLA_EXACT_ROW and rescale_norm != "inverse_density"
    if sampled:
        columns = _sample_columns(length, delta.device)
    for r0 in range(0, n_rows, block):
        part = rows[r0 : r0 + block]
        shape = part.shape
        mags = torch.abs(part, out=ws.get("work", shape))
        draws = ws.get("draws", shape).uniform_(0.0, 1.0, generator=generator)
        if not sampled:
            probs = della_rank_norm(mags).mul_(2 * epsilon).add_(density - epsilon)
            keep = torch.lt(draws, probs, out=draws)
            part.mul_(keep)
            if rescale_norm == "inverse_density":
                part.div_(probs)
            continue
        sample = mags.index_select(1, columns).sort(dim=1).values
        inf = torch.full((shape[0], 1), math.inf, dtype=mags.dtype, device=mags.device)
        ext = torch.cat([-inf, sample, inf], dim=1)  # ext[j+1] = s_(j); -inf: always keep, +inf: never
        scaled = draws.sub_(density - epsilon).mul_(DELLA_EXACT_ROW / (2 * epsilon)).floor_()
        index = ws.get("index", shape, torch.int64)
        index.copy_(scaled.add_(1.0).clamp_(0.0, DELLA_EXACT_ROW + 1.0))
        thresholds = torch.gather(ext, 1, index, out=draws)
        part.mul_(torch.gt(mags, thresholds, out=draws))
    if delta.dim() > 2:
        moved = list(delta.movedim(1, -1).shape)
        delta.copy_(rows.view(moved).movedim(-1, 1))
    if rescale_norm == "inverse_density":
        return 1.0
    return _scalar_rescale(rescale_norm, before, delta, density)


# ---------------------------------------------------------------------------------------
# Pure versions (new tensor in, new tensor out), mergekit's sparsify functions
# ---------------------------------------------------------------------------------------

def _applied(delta: torch.Tensor, scale: float) -> torch.Tensor:
    return delta.mul_(scale) if scale != 1.0 else delta


def magnitude(tensor: torch.Tensor, density: float, rescale_norm: str | None = None) -> torch.Tensor:
    delta = tensor.to(torch.float32, copy=True).contiguous()
    return _applied(delta, magnitude_(delta, density, rescale_norm))


def magnitude_outliers(tensor: torch.Tensor, density: float, gamma: float = 0.01,
                       rescale_norm: str | None = None) -> torch.Tensor:
    delta = tensor.to(torch.float32, copy=True).contiguous()
    return _applied(delta, magnitude_outliers_(delta, density, gamma, rescale_norm))


def bernoulli(tensor: torch.Tensor, density: float, rescale_norm: str | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    delta = tensor.to(torch.float32, copy=True).contiguous()
    return _applied(delta, bernoulli_(delta, density, rescale_norm, generator))


def della_magprune(tensor: torch.Tensor, density: float, epsilon: float, rescale_norm: str | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    delta = tensor.to(torch.float32, copy=True).contiguous()
    return _applied(delta, della_magprune_(delta, density, epsilon, rescale_norm, generator))
