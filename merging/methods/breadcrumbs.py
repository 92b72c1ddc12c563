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
from merging.task_vectors import sparse_merge


def breadcrumbs_merge(tensors: Sequence[torch.Tensor], base: torch.Tensor, *, consensus: bool,
                      weight: PerModel[float], density: PerModel[float, 1.0], gamma: PerModel[float, 0.01],
                      normalize: bool = False, rescale: bool = False, lambda_: float = 1.0, rescale_norm: str = "l1",
                      out_dtype: torch.dtype | None = None) -> torch.Tensor:
    return sparse_merge(tensors, base, RankWindow, {"density": density, "gamma": gamma}, weight=weight,
                        consensus=consensus, normalize=normalize, rescale=rescale, rescale_norm=rescale_norm,
                        lambda_=lambda_, out_dtype=out_dtype)



# The two variants differ only in sign election.
breadcrumbs = register(partial(breadcrumbs_merge, consensus=False), "breadcrumbs", family="sparse").fn
breadcrumbs_ties = register(partial(breadcrumbs_merge, consensus=True), "breadcrumbs_ties", family="sparse").fn
