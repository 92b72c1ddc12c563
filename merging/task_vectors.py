"""Generalized task arithmetic: what ties, dare_*, della*, breadcrumbs* are made of.

A method says per model what to keep of its task vector δ_i = θ_i − θ_base with a rule
from `merging.keep_rules`; here each rule becomes the few scalars (thresholds, draw seed,
DELLA's per-row tables) that the fused mixing pass (`merging.kernels.mix_`) evaluates per
entry, so a merge costs one pass over memory plus, for rank windows, a counting pass per
model (`merging.selection`), and for an L1 rescale a norm pass per model. The semantics
are mergekit 0.1.5's (mergekit/sparsify.py and generalized_task_arithmetic.py) except
where noted in `merging.selection` (ties at a threshold split in index order) and for
DELLA's ranks (at bin resolution, `keep_rules.DellaDrop`).

`rescale_norm` names how a rescale (rescale: true) restores the scale of a sparsified delta:
"l1" (mergekit): multiply by ‖δ‖₁ / ‖δ̂‖₁, skipped when either is below 1e-7;
"inverse_density" (the DARE paper): divide each kept entry by its keep probability (1/density;
DELLA: the entry's own probability), which makes DARE and DELLA unbiased in expectation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from merging import kernels
from merging.compile import compiled_kernel, run, will_compile
from merging.finite import NonFiniteMergeError
from merging.keep_rules import (RESCALE_EPS, DellaDrop, KeepRule, RandomDrop, RankWindow, TopK, check_della,
                                model_seed, prev_float32, top_k_count, trivial, window_ranks)
from merging.selection import Threshold, magnitudes_at_ranks, tie_cuts

RESCALE_NORMS = ("l1", "inverse_density")
DELLA_ROW_BLOCK = 1 << 20   # DELLA histograms rows in blocks of about this many entries (an 8 MB bin buffer)


def rescale_mode(rescale: bool, rescale_norm: str) -> str | None:
    """The rescale to apply (None when rescale is off); rejects unknown norms either way."""
    if rescale_norm not in RESCALE_NORMS:
        raise ValueError(f"rescale_norm must be one of {', '.join(RESCALE_NORMS)}; got {rescale_norm!r}")
    return rescale_norm if rescale else None


def check_per_model(tensors: Sequence[torch.Tensor], **params: Sequence[object]) -> None:
    """Per-model parameters must have one value per merged tensor."""
    for name, values in params.items():
        if len(values) != len(tensors):
            raise ValueError(f"{name}: expected {len(tensors)} values (one per model), got {len(values)}")


def sparse_merge(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    rule: Callable[..., KeepRule],
    per_model: dict[str, Sequence[float]],
    *,
    weight: Sequence[float],
    consensus: bool,
    normalize: bool,
    rescale: bool,
    rescale_norm: str,
    lambda_: float,
    out_dtype: torch.dtype | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """What every sparsifying method does once its signature has named its parameters:
    one `rule(**per_model[i], [seed], rescale_norm)` per model (the seed is the generator's,
    for the random rules), then `merge_task_vectors`. Kept here so that a method file holds
    its formula and signature and nothing else."""
    check_per_model(tensors, **per_model)
    norm = rescale_mode(rescale, rescale_norm)
    seeded = {} if generator is None else {"seed": generator.initial_seed()}
    rules = [rule(**{name: values[i] for name, values in per_model.items()}, **seeded, rescale_norm=norm)
             for i in range(len(tensors))]
    return merge_task_vectors(tensors, base, weight=weight, consensus=consensus, normalize=normalize,
                              lambda_=lambda_, rules=rules, out_dtype=out_dtype)


@dataclass
class Keep:
    """One model's rule as the mixing pass reads it: a kind, a row of fparams/iparams, and
    DELLA's (table, floors, row length) when the kind is della."""

    kind: str
    f: torch.Tensor
    k: torch.Tensor
    della: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


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
    any float dtype (they are read as stored); the result is in `out_dtype` (float32 when
    None). A NaN/inf result raises NonFiniteMergeError.
    """
    rules = list(rules) if rules is not None else [None] * len(tensors)
    check_per_model(tensors, weight=weight, rules=rules)
    out_dtype = out_dtype or torch.float32
    if not tensors:
        return base.to(out_dtype, copy=True)
    shape = base.shape
    rows = _row_layout(base, rules)
    flat_base = _flat(base, rows)
    flats = [_flat(t, rows) for t in tensors]
    found = _thresholds(flats, flat_base, rules)
    keeps = _keeps(rules, [_draw_seed(rule, i) for i, rule in enumerate(rules)], flats, flat_base, rows, found)
    divisor = float(sum(weight)) if normalize and not consensus else 1.0
    if abs(divisor) < 1e-8:
        divisor = 1.0
    factors, masks = _rescale_factors(flats, flat_base, rules, keeps)
    for w, keep, scale in zip(weight, keeps, factors):
        if consensus:
            keep.f[kernels.COEF] *= float(w) * scale
            keep.f[kernels.WEIGHT] = float(w)
        else:
            keep.f[kernels.COEF] *= float(lambda_) * float(w) * scale / divisor
    out = torch.empty(flat_base.numel(), dtype=out_dtype, device=base.device)
    device = base.device
    bad = run(kernels.mix_, out, [flat_base, *flats, *masks], torch.stack([k.f for k in keeps]).to(device),
              torch.stack([k.k for k in keeps]).to(device), [k.della for k in keeps],
              torch.tensor(float(lambda_), device=device),
              kinds=tuple(k.kind for k in keeps), consensus=consensus, normalize=normalize)
    if int(bad):
        raise NonFiniteMergeError(f"{int(bad)} merged values are NaN or inf")
    return _unflat(out, shape, rows)


def sparsify(tensor: torch.Tensor, rule: KeepRule) -> torch.Tensor:
    """A float32 copy of `tensor` with what `rule` drops set to 0 and the rule's rescale
    applied (mergekit's sparsify functions, `merging.sparsifiers`); random rules draw with
    the rule's own seed."""
    if rule.rescale_norm is not None:
        rescale_mode(True, rule.rescale_norm)
    rows = _row_layout(tensor, [rule])
    x = _flat(tensor, rows)
    (keep,) = _keeps([rule], [getattr(rule, "seed", 0)], [x], None, rows, _thresholds([x], None, [rule]))
    factors, masks = _rescale_factors([x], None, [rule], [keep])
    keep.f[kernels.COEF] *= factors[0]
    out = torch.empty(x.numel(), dtype=torch.float32, device=tensor.device)
    zero = torch.zeros((), dtype=tensor.dtype, device=tensor.device).expand(x.numel())
    run(kernels.mix_, out, [zero, x, *masks], keep.f[None].to(tensor.device), keep.k[None].to(tensor.device), [keep.della],
        torch.tensor(1.0, device=tensor.device), kinds=(keep.kind,), consensus=False, normalize=False)
    return _unflat(out, tensor.shape, rows)


# ---------------------------------------------------------------------------------------
# Rules → kernel parameters
# ---------------------------------------------------------------------------------------

def _blank(kind: str) -> Keep:
    f = torch.zeros(kernels.N_FPARAMS, dtype=torch.float32)
    f[[kernels.HI_HEAD, kernels.HI_TAIL]] = float("inf")
    f[[kernels.LO_HEAD, kernels.LO_TAIL]] = -1.0
    f[kernels.COEF] = f[kernels.WEIGHT] = f[kernels.DENSITY] = 1.0
    return Keep(kind, f, torch.zeros(kernels.N_IPARAMS, dtype=torch.int64))


def _draw_seed(rule: KeepRule | None, model: int) -> int:
    """Each model's task vector gets its own draws in a merge, from the plan's seed."""
    return model_seed(rule.seed, model) if isinstance(rule, (RandomDrop, DellaDrop)) else 0


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


def _thresholds(xs: Sequence[torch.Tensor], b: torch.Tensor | None,
                rules: Sequence[KeepRule | None]) -> list[list[Threshold]]:
    """Every rank threshold of every model, from one counting pass over all of them."""
    n = xs[0].numel()
    ranks = [ranks_needed(rule, n) for rule in rules]
    if not any(ranks):
        return [[] for _ in rules]
    return magnitudes_at_ranks(xs, b, ranks)


def _keeps(rules: Sequence[KeepRule | None], seeds: Sequence[int], xs: Sequence[torch.Tensor],
           b: torch.Tensor | None, rows: int | None, found: Sequence[Sequence[Threshold]]) -> list[Keep]:
    """Every model's keep parameters, the tie cuts of all of them found together
    (`selection.tie_cuts`: one pass instead of one or two per cut)."""
    cuts: list[tuple[int, Keep, int, Threshold, int]] = []
    keeps = []
    for i, (rule, seed, x, thresholds) in enumerate(zip(rules, seeds, xs, found)):
        pending: list[tuple[Keep, int, Threshold, int]] = []
        keeps.append(_keep(rule, seed, x, b, rows, thresholds, pending))
        cuts += [(i, *cut) for cut in pending]
    positions = tie_cuts(xs, b, [(i, th, need) for i, _, _, th, need in cuts])
    for (_, keep, field, _, _), position in zip(cuts, positions):
        keep.k[field] = position
    return keeps


def _keep(rule: KeepRule | None, seed: int, x: torch.Tensor, b: torch.Tensor | None, rows: int | None,
          thresholds: Sequence[Threshold], cuts: list[tuple[Keep, int, Threshold, int]]) -> Keep:
    """One model's keep parameters (coef 1, weight 1 before the mix's own), given the
    magnitudes at `ranks_needed(rule, n)`; a threshold whose tie the rule splits is left
    in `cuts` as (keep, LO_CUT or HI_CUT, threshold, how many of its tie to take)."""
    n = x.numel()
    state = trivial(rule)
    if state is not None:
        keep = _blank("all")
        if state == "none":
            keep.f[kernels.COEF] = 0.0
        return keep
    if isinstance(rule, TopK):  # keep descending ranks [0, k): v ≥ t before the cut, v > t after
        keep = _blank("window")
        k = top_k_count(rule.density, n)
        (th,) = thresholds
        cuts.append((keep, kernels.LO_CUT, th, k - (n - th.n_less - th.n_equal)))
        keep.f[kernels.LO_HEAD], keep.f[kernels.LO_TAIL] = prev_float32(th.value), th.value
        return keep
    if isinstance(rule, RankWindow):  # ascending ranks [start, stop)
        keep = _blank("window")
        start, stop = window_ranks(rule, n)
        if start >= stop:
            keep.f[kernels.COEF] = 0.0
            return keep
        found = iter(thresholds)
        if start > 0:  # drop ranks < start: v ≤ t before the cut, v < t after
            th = next(found)
            cuts.append((keep, kernels.LO_CUT, th, start - th.n_less))
            keep.f[kernels.LO_HEAD], keep.f[kernels.LO_TAIL] = th.value, prev_float32(th.value)
        if stop < n:  # drop ranks ≥ stop: keep v ≤ t before the cut, v < t after
            th = next(found)
            cuts.append((keep, kernels.HI_CUT, th, stop - th.n_less))
            keep.f[kernels.HI_HEAD], keep.f[kernels.HI_TAIL] = th.value, prev_float32(th.value)
        return keep
    if isinstance(rule, RandomDrop):
        keep = _blank("random")
        keep.f[kernels.DENSITY] = rule.density
        keep.k[kernels.SEED] = seed
        return keep
    if isinstance(rule, DellaDrop):
        keep = _blank("della")
        keep.k[kernels.SEED] = seed
        keep.f[kernels.INVERSE] = float(rule.rescale_norm == "inverse_density")
        keep.della = _della_tables(x, b, rule, rows or n)
        return keep
    raise TypeError(f"unknown keep rule {rule!r}")


def _rescale_factors(xs: Sequence[torch.Tensor], b: torch.Tensor | None, rules: Sequence[KeepRule | None],
                     keeps: Sequence[Keep]) -> tuple[list[float], list[torch.Tensor]]:
    """Each model's scalar rescale: ‖δ‖₁/‖keep(δ)‖₁ for "l1" (one pass over every model that
    needs it), 1/density for "inverse_density" (DELLA's per-entry 1/p is applied in the mix).
    The drawn models' keep bits are written by that pass (one packed int8 mask, a bit per
    model) and their kind becomes "mask": the mix reads the bits instead of drawing again.
    Returns the factors and the packed mask ([] when none was written)."""
    norms = [None if trivial(r) is not None or k.f[kernels.COEF] == 0 else r.rescale_norm for r, k in zip(rules, keeps)]
    factors = [1.0 / r.density if n == "inverse_density" and not isinstance(r, DellaDrop) else 1.0
               for r, n in zip(rules, norms)]
    l1 = [i for i, n in enumerate(norms) if n == "l1"]
    packed = None
    if l1:
        device = xs[0].device
        # A random keep test (DARE's draw; DELLA's row, bin, table lookup and draw) costs more
        # to redo in the mix than a bit of a packed int8 mask costs to write and read: the L1
        # pass that draws first writes bit j for the j-th drawn model, and those models read it.
        drawn = [i for i in l1 if keeps[i].kind in ("random", "della")][: kernels.MAX_MASKED]
        for bit, i in enumerate(drawn):
            keeps[i].k[kernels.MASK_BIT] = bit
        packed = torch.empty(xs[0].numel(), dtype=torch.int8, device=device) if drawn else None
        sums = run(kernels.l1_norms, packed, [b, *(xs[i] for i in l1)],
                   torch.stack([keeps[i].f for i in l1]).to(device), torch.stack([keeps[i].k for i in l1]).to(device),
                   [keeps[i].della for i in l1], kinds=tuple(keeps[i].kind for i in l1),
                   masked=tuple(i in drawn for i in l1)).cpu().tolist()
        for i, (before, after) in zip(l1, sums):
            factors[i] = before / after if before >= RESCALE_EPS and after >= RESCALE_EPS else 1.0
        for i in drawn:
            keeps[i].kind, keeps[i].della = "mask", None
    return factors, [] if packed is None else [packed]


# ---------------------------------------------------------------------------------------
# DELLA: rows, and the keep probability per row and magnitude bin
# ---------------------------------------------------------------------------------------

def _row_layout(tensor: torch.Tensor, rules: Sequence[KeepRule | None]) -> int | None:
    """DELLA ranks within rows along dim 1 (mergekit; a 1-D tensor is one row): their length
    when some rule is DELLA's, else None (no layout needed)."""
    if not any(isinstance(r, DellaDrop) and trivial(r) is None for r in rules):
        return None
    return tensor.shape[1] if tensor.dim() >= 2 else max(tensor.numel(), 1)


def _flat(tensor: torch.Tensor, rows: int | None) -> torch.Tensor:
    """The tensor as the kernels read it: flat, in row layout (dim 1 last) for DELLA above 2-D."""
    if rows is not None and tensor.dim() > 2:
        tensor = tensor.movedim(1, -1)
    return tensor.contiguous().view(-1)


def _unflat(flat: torch.Tensor, shape: torch.Size, rows: int | None) -> torch.Tensor:
    if rows is not None and len(shape) > 2:
        moved = [shape[0], *shape[2:], shape[1]]
        return flat.view(moved).movedim(-1, 1).contiguous()
    return flat.view(shape)


def _della_tables(x: torch.Tensor, b: torch.Tensor | None, rule: DellaDrop,
                  row_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(keep probability per row and bin, flat; each row's floor key; row length): p =
    (density − ε) + 2ε·r in float64, then float32, r the bin's mean normalized rank."""
    check_della(rule.density, rule.epsilon)
    counts, floors = _della_counts(x, b, row_len)
    table = _bin_table(counts, row_len, 2 * rule.epsilon, rule.density - rule.epsilon)
    return table.view(-1), floors, torch.tensor(row_len, device=x.device)


def _bin_table(counts: torch.Tensor, row_len: int, span: float, low: float) -> torch.Tensor:
    """low + span·r per row and bin (float32; r the bin's mean normalized rank, 0.5 for rows
    of one element, mergekit's 0/0), by `kernels.della_table`: compiled for big tables."""
    if row_len == 1:
        return torch.full(counts.shape, 0.5 * span + low, dtype=torch.float64, device=counts.device).float()

    def scalar(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float64, device=counts.device)

    kernel = compiled_kernel(kernels.della_table) if will_compile(counts.numel(), counts.device) else kernels.della_table
    return kernel(counts, scalar(1.0 / (2.0 * (row_len - 1))), scalar(span), scalar(low))


def _della_counts(x: torch.Tensor, b: torch.Tensor | None, row_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, how many magnitudes fall in each bin (rows × DELLA_BINS, int32), and each
    row's floor key: a pass for the rows' largest magnitudes, then, over blocks of whole
    rows, a pass writing each entry's bin into a cache-sized buffer and a `scatter_add_`
    of it along the rows (parallel over rows, twice as fast as a bincount)."""
    n_rows = x.numel() // row_len
    x2, b2 = x.view(n_rows, row_len), None if b is None else b.view(n_rows, row_len)
    compiled = will_compile(x.numel(), x.device)
    floors = (compiled_kernel(kernels.della_row_floors) if compiled else kernels.della_row_floors)(x2, b2)
    bins = compiled_kernel(kernels.della_bins_) if compiled else kernels.della_bins_
    block = max(1, DELLA_ROW_BLOCK // row_len)
    buffer = torch.empty(min(block, n_rows), row_len, dtype=torch.int64, device=x.device)
    counts = torch.zeros(n_rows, kernels.DELLA_BINS, dtype=torch.int32, device=x.device)
    ones = torch.ones((), dtype=torch.int32, device=x.device)
    for r0 in range(0, n_rows, block):
        r1 = min(n_rows, r0 + block)
        part = buffer[: r1 - r0]
        bins(part, x2[r0:r1], None if b2 is None else b2[r0:r1], floors[r0:r1])
        counts[r0:r1].scatter_add_(1, part, ones.expand(part.shape))
    return counts, floors


def della_keep_probabilities(tensor: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA MagPrune keep probabilities, shaped like `tensor`: within each row (along dim 1;
    1-D: the tensor), p = (density − ε) + 2ε · rank_norm(|x|), so the smallest magnitude is
    kept with probability density − ε, the largest with density + ε, and a row's mean is
    density."""
    check_della(density, epsilon)
    return _per_entry(tensor, 2 * epsilon, density - epsilon)


def della_rank_norm(tensor: torch.Tensor) -> torch.Tensor:
    """Normalized ascending magnitude rank of each element within its row (as DELLA ranks),
    in [0, 1], at bin resolution: mergekit's rank_norm when no two magnitudes of a row share a bin."""
    return _per_entry(tensor, 1.0, 0.0)


def _per_entry(tensor: torch.Tensor, span: float, low: float) -> torch.Tensor:
    """low + span·r for every entry, r its normalized rank in its row at bin resolution
    (`_bin_table`), shaped like `tensor`."""
    rows = _row_layout(tensor, [DellaDrop(0.5, 0.25, 0)]) or 1
    x = _flat(tensor, rows)
    counts, floors = _della_counts(x, None, rows)
    index = torch.arange(x.numel(), device=x.device)
    values = kernels.della_lookup(_bin_table(counts, rows, span, low).view(-1), floors,
                                  torch.tensor(rows, device=x.device), kernels.magnitudes(x, None), index)
    return _unflat(values, tensor.shape, rows)
