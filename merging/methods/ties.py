"""TIES-Merging: trim, elect sign, disjoint merge (Yadav et al. 2023, arXiv:2306.01708).

Task vectors τ_i = θ_i − θ_base are trimmed to their k_i = max(1, ⌊density_i·n⌋) largest
magnitudes (τ̂_i; ties at the threshold go to the lower index). The elected sign is that of
the weighted sum, γ = sgn Σ_i w_i τ̂_i (0 counts as +), and only agreeing entries are merged:

    m_i = [sgn(w_i τ̂_i) = γ]
    θ   = θ_base + λ · Σ_i m_i w_i τ̂_i / D,   D = Σ_i m_i w_i (0 → 1) if normalize else 1

The paper's "disjoint mean" is normalize: true (the default) with unit weights. With
rescale: true, τ̂_i is scaled back to τ_i's L1 norm (rescale_norm: l1, mergekit) or by
1/density_i (rescale_norm: inverse_density). (mergekit's int8_mask is accepted by the plan
and changes nothing: masks are never materialized here.)
"""

from collections.abc import Sequence

import torch

from merging.keep_rules import TopK
from merging.registry import PerModel, register
from merging.task_vectors import sparse_merge


def ties(tensors: Sequence[torch.Tensor], base: torch.Tensor, *, weight: PerModel[float],
         density: PerModel[float, 1.0], normalize: bool = True, rescale: bool = False, lambda_: float = 1.0,
         rescale_norm: str = "l1", out_dtype: torch.dtype | None = None) -> torch.Tensor:
    return sparse_merge(tensors, base, TopK, {"density": density}, weight=weight, consensus=True, normalize=normalize,
                        rescale=rescale, rescale_norm=rescale_norm, lambda_=lambda_, out_dtype=out_dtype)


register(ties, "ties", family="sparse")
