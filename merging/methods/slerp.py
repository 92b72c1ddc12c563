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

from collections.abc import Sequence

import torch

from merging.registry import register

DOT_THRESHOLD = 0.9995
EPS = 1e-8


def slerp_pair(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """SLERP between two whole tensors (flattened), lerp when nearly collinear or zero."""
    n0 = torch.linalg.vector_norm(v0)
    n1 = torch.linalg.vector_norm(v1)
    if n0 <= EPS or n1 <= EPS:
        return torch.lerp(v0, v1, float(t))
    dot = float(torch.dot(v0.reshape(-1), v1.reshape(-1)) / (n0 * n1))
    dot = max(-1.0, min(1.0, dot))
    if abs(dot) > DOT_THRESHOLD:
        return torch.lerp(v0, v1, float(t))
    omega = torch.acos(torch.tensor(dot, dtype=torch.float64))
    sin_omega = torch.sin(omega)
    c0 = float(torch.sin((1 - t) * omega) / sin_omega)
    c1 = float(torch.sin(t * omega) / sin_omega)
    return torch.add(v0 * c0, v1, alpha=c1)


def slerp(tensors: Sequence[torch.Tensor], base: torch.Tensor, *, t: float = 0.5) -> torch.Tensor:
    (other,) = tensors
    return slerp_pair(float(t), base, other)


def alignment_slerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    t: float = 0.5,
    lerp_norms: bool = True,
    module_class: str = "other",
) -> torch.Tensor:
    d1, d2 = (tensor - base for tensor in tensors)
    if lerp_norms and module_class == "norm":
        merged = torch.lerp(d1, d2, float(t))
    else:
        merged = slerp_pair(float(t), d1, d2)
    return merged.add_(base)


register(slerp, "slerp", family="interpolation", max_models=1)
register(alignment_slerp, "alignment_slerp", family="interpolation", min_models=2, max_models=2, mergekit=False)
