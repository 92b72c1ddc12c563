"""Model Breadcrumbs (Davari & Belilovsky 2024, arXiv:2312.06795).

Each task vector τ_i = θ_i − θ_base loses both tails of its magnitude distribution: the
largest ⌊γ_i·n⌋ entries (outliers) and the smallest, leaving ⌊density_i·n⌋. By ascending
magnitude rank (ties in index order) the kept window is

    [n_bot, n_bot + ⌊density_i·n⌋),   n_bot = max(0, n − ⌊density_i·n⌋ − ⌊γ_i·n⌋)

(γ = gamma; the outlier cut shrinks when density + gamma > 1, so the density is met; as in
mergekit, density ≥ 1 keeps everything). Then

    breadcrumbs:      θ = θ_base + λ Σ_i w_i τ̂_i / D,  D = Σ_i w_i if normalize else 1
    breadcrumbs_ties: signs elected as in TIES, θ = θ_base + λ Σ_i m_i w_i τ̂_i / D,
                      D = Σ_i m_i w_i (0 → 1) if normalize else 1

normalize and rescale default to false (mergekit); rescale_norm as for TIES.
"""

from collections.abc import Sequence
from functools import partial

import torch

from merging.keep_rules import RankWindow
from merging.registry import PerModel, register
from merging.task_vectors import check_per_model, merge_task_vectors, rescale_mode


def breadcrumbs_merge(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    consensus: bool,
    weight: PerModel[float],
    density: PerModel[float, 1.0],
    gamma: PerModel[float, 0.01],
    normalize: bool = False,
    rescale: bool = False,
    lambda_: float = 1.0,
    rescale_norm: str = "l1",
    int8_mask: bool = False,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    norm = rescale_mode(rescale, rescale_norm)
    check_per_model(tensors, density=density, gamma=gamma)
    return merge_task_vectors(
        tensors, base, weight=weight, consensus=consensus, normalize=normalize, lambda_=lambda_,
        rules=[RankWindow(d, g, norm) for d, g in zip(density, gamma)], out_dtype=out_dtype)


# The two registered variants differ only in sign election (and mergekit's normalize default).
breadcrumbs = partial(breadcrumbs_merge, consensus=False)
breadcrumbs_ties = partial(breadcrumbs_merge, consensus=True)

register(breadcrumbs, "breadcrumbs", family="sparse")
register(breadcrumbs_ties, "breadcrumbs_ties", family="sparse")
