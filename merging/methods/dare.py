"""DARE: drop and rescale (Yu et al. 2024, "Language Models are Super Mario", arXiv:2311.03099).

Each entry of a task vector τ_i = θ_i − θ_base is dropped independently with probability
1 − density_i (m ~ Bernoulli(density_i)); the paper rescales the survivors by 1/density_i so
that E[τ̂_i] = τ_i:

    τ̂_i = m ⊙ τ_i / density_i

dare_linear then adds λ Σ_i w_i τ̂_i / D to the base (D = Σ_i w_i if normalize else 1, as in
task arithmetic); dare_ties elects signs first, exactly as TIES does with trimmed vectors:
m_i = [sgn(w_i τ̂_i) = sgn Σ_j w_j τ̂_j], θ = θ_base + λ Σ_i m_i w_i τ̂_i / D with
D = Σ_i m_i w_i (0 → 1) if normalize else 1. normalize defaults to false for both.

Defaults are mergekit's: rescale: true with rescale_norm: l1, i.e.
τ̂_i = m ⊙ τ_i · ‖τ_i‖₁/‖m ⊙ τ_i‖₁ (close to 1/density_i for large tensors);
rescale_norm: inverse_density gives the paper's unbiased 1/density_i. The draw for entry j of
model i is a counter-based hash of (seed, i, j) (`keep_rules.uniform_draws`), the seed being
that of the merger's per-tensor `generator`: a plan seed reproduces a merge exactly, on any
device and thread count, and the fused CPU kernel drops the same entries as the torch code.
Not elementwise: the L1 rescale is a whole-tensor norm.
"""

from collections.abc import Sequence
from functools import partial

import torch

from merging.keep_rules import RandomDrop
from merging.registry import PerModel, register
from merging.task_vectors import sparse_merge


def dare(tensors: Sequence[torch.Tensor], base: torch.Tensor, *, consensus: bool, weight: PerModel[float],
         density: PerModel[float, 1.0], normalize: bool = False, rescale: bool = True, lambda_: float = 1.0,
         rescale_norm: str = "l1", out_dtype: torch.dtype | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    return sparse_merge(tensors, base, RandomDrop, {"density": density}, weight=weight, consensus=consensus,
                        normalize=normalize, rescale=rescale, rescale_norm=rescale_norm, lambda_=lambda_,
                        out_dtype=out_dtype, generator=generator)



# The two variants differ only in sign election.
dare_linear = register(partial(dare, consensus=False), "dare_linear", family="sparse").fn
dare_ties = register(partial(dare, consensus=True), "dare_ties", family="sparse").fn
