"""Geometry of alignment vectors: how far, and in which direction, each variant moved from the base.

For fine-tuned variants θ_i of one base θ_SFT, the *alignment vector* of variant i is
d_i = θ_i − θ_SFT. Figure 1 of the heterogeneous model soups paper (Motyka et al.) shows,
per layer and per layer group (attention, MLP, norms; embeddings and head separately),

    L2 norm     ||d_i||           = sqrt(Σ_t ||d_i,t||²)
    cosine      cos(d_a, d_b)     = Σ_t ⟨d_a,t, d_b,t⟩ / (||d_a|| · ||d_b||)
    angle       ∠(d_a, d_b)       = degrees(arccos(cos))

where t runs over the tensors of the group within the layer: a group is measured as the
*concatenation* of its tensors, not as an average of per-tensor angles, so a large matrix
weighs in proportion to its size (which is what a merge of the whole group does to it).
The paper found the alignment vectors of different methods (DPO, KTO, ORPO) nearly
orthogonal. That is why SLERP behaves differently from LERP on such pairs: averaging two
orthogonal vectors shrinks the result to ~1/√2 of their length, which SLERP avoids, and
any merge method that assumes aligned task vectors is working outside its assumptions.

Numerics and memory: every sum is accumulated in float64, tensor by tensor and in flat
chunks of a tensor, so memory holds one tensor per model (in its stored dtype) plus a
small float64 work buffer, whatever the model size. All pairwise dot products of a chunk
come from one Gram matrix D·Dᵀ of the stacked chunk deltas.

Conventions:
  * a zero alignment vector (a variant identical to the base on a group) has no direction:
    its cosine and angle are NaN (never a division error); its norm row is 0.0.
  * tied embeddings: a model that does not store `lm_head.weight` has no lm_head rows
    (its head *is* its embedding, whose rows are already there). A tensor a model lacks
    only that way is left out of that model's sums, and a pair's cosine is taken over the
    tensors both models store, with norms over those same tensors (so it stays a cosine).
  * non-floating tensors (integer/bool buffers such as GPT-2 attention masks) are skipped.
  * summary rows per model and per pair: layer None, group "all" (the whole model).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal, Protocol

import torch

from merging.names import ATTENTION, MLP, layer_index, module_class
from merging.validate import check_compatible

Granularity = Literal["group", "module"]
WHOLE_MODEL = "all"
#: Elements per float64 work chunk (32 MiB per model): bounds memory on any tensor size.
CHUNK_ELEMENTS = 1 << 22

# Row order within a layer: Figure 1's groups first, then the finer module classes.
_ORDER = ("attn", "mlp", "norm", "embed", "lm_head", "q", "k", "v", "o", "qkv", "gate", "up", "down", "other",
          WHOLE_MODEL)


class _Readable(Protocol):
    """The part of `ModelFolder` (or `InMemoryModel`) that geometry reads."""

    label: str

    def tensor_names(self) -> list[str]: ...
    def get(self, name: str) -> torch.Tensor: ...
    def dtype(self, name: str) -> torch.dtype: ...


@dataclass(frozen=True)
class NormRow:
    """||d_model|| over one (layer, group); layer None for embeddings, final norm, head and "all"."""

    layer: int | None
    group: str
    model: str
    l2: float
    n_params: int


@dataclass(frozen=True)
class AngleRow:
    """Angle between the alignment vectors of models a and b over one (layer, group); NaN if one is zero."""

    layer: int | None
    group: str
    a: str
    b: str
    cosine: float
    degrees: float


@dataclass(frozen=True)
class Geometry:
    """Norm and angle rows in a stable order: layers ascending, then non-layer tensors, then "all"."""

    models: tuple[str, ...]
    norms: list[NormRow] = field(default_factory=list)
    angles: list[AngleRow] = field(default_factory=list)


Key = tuple[int | None, str]


def tensor_key(name: str, granularity: Granularity = "group") -> Key:
    """(layer, group) a tensor is measured in: group is attn/mlp/norm/embed/lm_head/other,
    or the module class itself (q, k, ..., down) at "module" granularity."""
    cls = module_class(name)
    if granularity == "group":
        cls = "attn" if cls in ATTENTION else "mlp" if cls in MLP else cls
    elif granularity != "module":
        raise ValueError(f"granularity must be 'group' or 'module', not {granularity!r}")
    return layer_index(name), cls


def cosine(dot: float, sq_a: float, sq_b: float) -> float:
    """⟨a,b⟩/(|a||b|) from the accumulated sums; NaN when either vector is zero (no direction)."""
    denominator = math.sqrt(sq_a) * math.sqrt(sq_b)
    if denominator == 0.0 or not math.isfinite(denominator):
        return math.nan
    return max(-1.0, min(1.0, dot / denominator))  # rounding can step just outside [-1, 1]


def degrees(cos: float) -> float:
    """Angle in degrees; NaN stays NaN."""
    return math.nan if math.isnan(cos) else math.degrees(math.acos(cos))


class _Sums:
    """Float64 sums of one (layer, group): Gram G[a,b] = Σ⟨d_a,d_b⟩, the pair-restricted squared
    norms Q[a,b] = Σ ||d_a||² over tensors b also has, and element counts."""

    def __init__(self, k: int):
        self.gram = torch.zeros(k, k, dtype=torch.float64)
        self.pair_sq = torch.zeros(k, k, dtype=torch.float64)
        self.numel = torch.zeros(k, dtype=torch.int64)
        self.common = torch.zeros(k, k, dtype=torch.int64)

    def add(self, gram: torch.Tensor, present: torch.Tensor, numel: int) -> None:
        mask = present.to(torch.float64)
        self.gram += gram
        self.pair_sq += gram.diagonal()[:, None] * mask[None, :]
        self.numel += numel * present.to(torch.int64)
        self.common += numel * (present[:, None] & present[None, :]).to(torch.int64)


def tensor_gram(base: torch.Tensor, tuned: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """K×K float64 Gram matrix of the alignment vectors d_i = tuned_i − base of one tensor
    (a missing tensor counts as a zero vector), computed in flat chunks to bound memory."""
    k = len(tuned)
    gram = torch.zeros(k, k, dtype=torch.float64)
    flat_base = base.reshape(-1)
    flat = [t.reshape(-1) if t is not None else None for t in tuned]
    for start in range(0, flat_base.numel(), CHUNK_ELEMENTS):
        b = flat_base[start:start + CHUNK_ELEMENTS].to(torch.float64)
        deltas = torch.zeros(k, b.numel(), dtype=torch.float64)
        for i, t in enumerate(flat):
            if t is not None:
                torch.sub(t[start:start + CHUNK_ELEMENTS].to(torch.float64), b, out=deltas[i])
        gram += deltas @ deltas.T
    return gram


def geometry_from_tensors(models: Sequence[str],
                          tensors: Iterable[tuple[str, torch.Tensor, Sequence[torch.Tensor | None]]],
                          *, granularity: Granularity = "group") -> Geometry:
    """The geometry of `(name, base tensor, [each model's tensor or None])` triples: the pure
    math behind `alignment_geometry`, usable on tensors that never touched disk."""
    k = len(models)
    sums: dict[Key, _Sums] = {}
    whole = _Sums(k)
    for name, base, tuned in tensors:
        present = torch.tensor([t is not None for t in tuned], dtype=torch.bool)
        gram = tensor_gram(base, tuned)
        key = tensor_key(name, granularity)
        sums.setdefault(key, _Sums(k)).add(gram, present, base.numel())
        whole.add(gram, present, base.numel())
    ordered = sorted(sums.items(), key=lambda item: _sort_key(item[0]))
    ordered.append(((None, WHOLE_MODEL), whole))
    norms = [row for key, s in ordered for row in _norm_rows(key, s, models)]
    angles = [row for key, s in ordered for row in _angle_rows(key, s, models)]
    return Geometry(models=tuple(models), norms=norms, angles=angles)


def _sort_key(key: Key) -> tuple[bool, int, int, str]:
    layer, group = key
    rank = _ORDER.index(group) if group in _ORDER else len(_ORDER)
    return layer is None, layer if layer is not None else -1, rank, group


def _norm_rows(key: Key, s: _Sums, models: Sequence[str]) -> list[NormRow]:
    return [NormRow(key[0], key[1], m, math.sqrt(float(s.gram[i, i])), int(s.numel[i]))
            for i, m in enumerate(models) if s.numel[i] > 0]


def _angle_rows(key: Key, s: _Sums, models: Sequence[str]) -> list[AngleRow]:
    rows = []
    for i, j in combinations(range(len(models)), 2):
        if s.common[i, j] == 0:
            continue
        cos = cosine(float(s.gram[i, j]), float(s.pair_sq[i, j]), float(s.pair_sq[j, i]))
        rows.append(AngleRow(key[0], key[1], models[i], models[j], cos, degrees(cos)))
    return rows


def alignment_geometry(base: _Readable, sources: Mapping[str, _Readable], *,
                       granularity: Granularity = "group") -> Geometry:
    """Norms of and angles between the alignment vectors θ_source − θ_base, per layer and group.

    The models are first checked with `check_compatible` (IncompatibleModelsError names each
    model, tensor and both shapes). Reads one tensor at a time per model, so it runs on models
    larger than memory. See the module docstring for formulas and conventions.
    """
    models = list(sources)
    if not models:
        raise ValueError("alignment_geometry needs at least one source model besides the base")
    names = check_compatible(base.label, base, sources)  # type: ignore[arg-type]
    stored = {m: set(model.tensor_names()) for m, model in sources.items()}

    def triples() -> Iterable[tuple[str, torch.Tensor, list[torch.Tensor | None]]]:
        for name in names:
            if not base.dtype(name).is_floating_point:
                continue
            # A tied head reads as the model's embedding: not an alignment of the head.
            tuned = [sources[m].get(name) if name in stored[m] else None for m in models]
            yield name, base.get(name), tuned

    return geometry_from_tensors(models, triples(), granularity=granularity)
