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

import torch

from merging.registry import MethodSpec, register
from merging.sparsify import check_per_model, magnitude_outliers_, merge_task_vectors, rescale_mode


def _breadcrumbs(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    consensus: bool,
    weight: Sequence[float],
    density: Sequence[float],
    gamma: Sequence[float],
    normalize: bool,
    rescale: bool,
    lambda_: float,
    rescale_norm: str,
) -> torch.Tensor:
    norm = rescale_mode(rescale, rescale_norm)
    check_per_model(tensors, density=density, gamma=gamma)
    return merge_task_vectors(
        tensors, base, weight=weight, consensus=consensus, normalize=normalize, lambda_=lambda_,
        sparsify=lambda i, delta, ws: magnitude_outliers_(delta, density[i], gamma[i], norm, ws))


def breadcrumbs(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weight: Sequence[float],
    density: Sequence[float],
    gamma: Sequence[float],
    normalize: bool = False,
    rescale: bool = False,
    lambda_: float = 1.0,
    int8_mask: bool = False,
    rescale_norm: str = "l1",
) -> torch.Tensor:
    return _breadcrumbs(tensors, base, consensus=False, weight=weight, density=density, gamma=gamma,
                        normalize=normalize, rescale=rescale, lambda_=lambda_, rescale_norm=rescale_norm)


def breadcrumbs_ties(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weight: Sequence[float],
    density: Sequence[float],
    gamma: Sequence[float],
    normalize: bool = False,
    rescale: bool = False,
    lambda_: float = 1.0,
    int8_mask: bool = False,
    rescale_norm: str = "l1",
) -> torch.Tensor:
    return _breadcrumbs(tensors, base, consensus=True, weight=weight, density=density, gamma=gamma,
                        normalize=normalize, rescale=rescale, lambda_=lambda_, rescale_norm=rescale_norm)


register(MethodSpec("breadcrumbs", breadcrumbs, model_params={"weight": None, "density": 1.0, "gamma": 0.01},
                    shared_params={"int8_mask": False, "normalize": False, "rescale": False, "lambda": 1.0,
                                   "rescale_norm": "l1"}))
register(MethodSpec("breadcrumbs_ties", breadcrumbs_ties,
                    model_params={"weight": None, "density": 1.0, "gamma": 0.01},
                    shared_params={"int8_mask": False, "normalize": False, "rescale": False, "lambda": 1.0,
                                   "rescale_norm": "l1"}))
