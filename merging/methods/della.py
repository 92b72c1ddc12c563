"""DELLA-Merging: magnitude-based sampling (Deep et al. 2024, arXiv:2406.11617).

MagPrune drops entries of τ_i = θ_i − θ_base at random like DARE, but keeps big entries
more often: within each row (a 1-D tensor is one row; mergekit ranks along dim 1), the entry
of normalized magnitude rank r ∈ [0, 1] survives with probability

    p = (density_i − ε_i) + 2 ε_i · r          (ε = epsilon; density ± ε must lie in (0, 1))

and the paper rescales survivors by 1/p (rescale_norm: inverse_density, unbiased). The
defaults are mergekit's: rescale: true with the L1 rescale ‖τ_i‖₁/‖τ̂_i‖₁. Then, as in TIES,

    della:        signs elected, θ = θ_base + λ Σ_i m_i w_i τ̂_i / D, D = Σ_i m_i w_i (normalize: true)
    della_linear: θ = θ_base + λ Σ_i w_i τ̂_i / D, D = Σ_i w_i if normalize (default false) else 1

Ranks are taken at bin resolution (merging.keep_rules.DELLA_BINS): magnitudes are binned
at 16 bins per binade below the row's largest, and each element gets its bin's mean rank,
so a row is ranked by one histogram instead of a sort. That is mergekit's exact rank
wherever no two magnitudes of a row share a bin; where several do (ties, or values within
6 % of each other) they share one keep probability, and every row's mean probability stays
exactly `density`. The draw for entry j of model i is the counter-based u(seed, i, j) of
DARE (merging.methods.dare), so a plan seed gives the same merge on CPU and GPU, and the
fused CPU kernel keeps the same entries as the torch code.
"""

from collections.abc import Sequence
from functools import partial

import torch

from merging.keep_rules import DellaDrop
from merging.registry import PerModel, register
from merging.task_vectors import sparse_merge


def della_merge(tensors: Sequence[torch.Tensor], base: torch.Tensor, *, consensus: bool, weight: PerModel[float],
                density: PerModel[float, 1.0], epsilon: PerModel[float, 0.15], normalize: bool = False,
                rescale: bool = True, lambda_: float = 1.0, rescale_norm: str = "l1",
                out_dtype: torch.dtype | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    return sparse_merge(tensors, base, DellaDrop, {"density": density, "epsilon": epsilon}, weight=weight,
                        consensus=consensus, normalize=normalize, rescale=rescale, rescale_norm=rescale_norm,
                        lambda_=lambda_, out_dtype=out_dtype, generator=generator)



# The two variants differ in sign election and in mergekit's normalize default.
della = register(partial(della_merge, consensus=True, normalize=True), "della", family="sparse").fn
della_linear = register(partial(della_merge, consensus=False), "della_linear", family="sparse").fn
