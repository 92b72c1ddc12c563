"""Spherical interpolation of two models, on weights (`slerp`) or on alignment vectors
(`alignment_slerp`).

slerp (Shoemake 1985; mergekit's `slerp`), per tensor, flattened, v0 = base, v1 = the other model:

    Ω = arccos(⟨v0/‖v0‖, v1/‖v1‖⟩),  θ = sin((1−t)Ω)/sinΩ · v0 + sin(tΩ)/sinΩ · v1

falling back to lerp (1−t)·v0 + t·v1 when |cos Ω| > 0.9995 (near-collinear: sinΩ → 0).

alignment_slerp (heterogeneous model soups, Motyka et al.): SLERP of the alignment vectors
d_i = θ_i − θ_base of two aligned variants of one SFT base, with t playing the paper's λ:

    θ = θ_base + sin((1−t)Ω)/sinΩ · d1 + sin(tΩ)/sinΩ · d2,   Ω = ∠(flat d1, flat d2) per tensor

t = 0 gives model 1, t = 1 model 2. With `lerp_norms` (default on) normalization-layer
parameters are merged by LERP, θ_base + (1−t)·d1 + t·d2, because the study found SLERP on
RMSNorm weights broke the models. Near-collinear or zero alignment vectors also use LERP.
"""

import math
from collections.abc import Sequence

import torch

from merging.registry import register
from merging.weighted_sum import gram, task_vector_sum, weighted_sum

DOT_THRESHOLD = 0.9995
EPS = 1e-8


def slerp_coefficients(t: float, g: torch.Tensor) -> tuple[float, float]:
    """(c0, c1) with slerp(t, v0, v1) = c0·v0 + c1·v1, from the Gram matrix of v0, v1:
    lerp's (1 − t, t) when either is ~0 or they are nearly collinear. Two passes over
    memory in all (dot products, then the sum) instead of a dozen float32 temporaries."""
    n0, n1 = math.sqrt(max(float(g[0, 0]), 0.0)), math.sqrt(max(float(g[1, 1]), 0.0))
    if n0 <= EPS or n1 <= EPS:
        return 1.0 - t, t
    dot = max(-1.0, min(1.0, float(g[0, 1]) / (n0 * n1)))
    if abs(dot) > DOT_THRESHOLD:
        return 1.0 - t, t
    omega = math.acos(dot)
    return math.sin((1 - t) * omega) / math.sin(omega), math.sin(t * omega) / math.sin(omega)


def slerp(tensors: Sequence[torch.Tensor], base: torch.Tensor, *, t: float = 0.5,
          out_dtype: torch.dtype | None = None) -> torch.Tensor:
    (other,) = tensors
    return weighted_sum([base, other], slerp_coefficients(float(t), gram([base, other])), out_dtype)


def alignment_slerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    t: float = 0.5,
    lerp_norms: bool = True,
    module_class: str = "other",
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    if lerp_norms and module_class == "norm":
        coefs = (1.0 - float(t), float(t))
    else:
        coefs = slerp_coefficients(float(t), gram(tensors, base))
    return task_vector_sum(base, tensors, coefs, out_dtype)


register(slerp, "slerp", family="interpolation", max_models=1)
register(alignment_slerp, "alignment_slerp", family="interpolation", min_models=2, max_models=2, mergekit=False)
