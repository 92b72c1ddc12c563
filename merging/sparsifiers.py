"""mergekit's sparsify functions, one task vector in, its sparsified float32 copy out.

For callers that want a sparsified vector rather than a merge (analysis, tests against
mergekit); the merges themselves never materialize one (`merging.task_vectors`).
`rescale_norm` is None (no rescale), "l1" or "inverse_density" (see merging.task_vectors).
"""

from __future__ import annotations

import torch

from merging.keep_rules import DellaDrop, RandomDrop, RankWindow, TopK
from merging.task_vectors import sparsify


def magnitude(tensor: torch.Tensor, density: float, rescale_norm: str | None = None) -> torch.Tensor:
    """TIES trim: the k = max(1, ⌊density·n⌋) largest magnitudes kept (ties in index order)."""
    return sparsify(tensor, TopK(density, rescale_norm))


def magnitude_outliers(tensor: torch.Tensor, density: float, gamma: float = 0.01,
                       rescale_norm: str | None = None) -> torch.Tensor:
    """Model Breadcrumbs: ascending magnitude ranks [n_bot, n_bot + ⌊density·n⌋) kept,
    n_bot = max(0, n − ⌊density·n⌋ − ⌊gamma·n⌋)."""
    return sparsify(tensor, RankWindow(density, gamma, rescale_norm))


def bernoulli(tensor: torch.Tensor, density: float, rescale_norm: str | None = None, seed: int = 0) -> torch.Tensor:
    """DARE: entry i kept iff u(seed, i) < density (the counter-based draw of merging.kernels)."""
    return sparsify(tensor, RandomDrop(density, seed, rescale_norm))


def della_magprune(tensor: torch.Tensor, density: float, epsilon: float, rescale_norm: str | None = None,
                   seed: int = 0) -> torch.Tensor:
    """DELLA MagPrune: entry i of a row kept iff u(seed, i) < p_i, p_i = density − ε + 2ε·rank_norm_i."""
    return sparsify(tensor, DellaDrop(density, epsilon, seed, rescale_norm))
