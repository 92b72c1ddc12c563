"""SLERP generalised to weighted pairs and N models (mergekit's `nuslerp` and `multislerp`).

nuslerp: two models with weights w1, w2, t = w2/(w1+w2) (0.5 if the sum is ~0); SLERP of
the whole flattened tensors (`nuslerp_flatten`, default), of each row (last dim), or of each
column (`nuslerp_row_wise`). With a base it interpolates the task vectors and adds them back:
θ = θ_base + slerp(t, θ1−θ_base, θ2−θ_base). Collinear (1−cos² ≤ ε²) → lerp.

multislerp (barycentric interpolation on the hypersphere; Goddard): with x_i the flattened
(task) tensors, u_i = x_i/‖x_i‖ and normalised weights w_i,
    m = Σ w_i u_i / ‖Σ w_i u_i‖,   g = Σ w_i (u_i − ⟨u_i,m⟩ m)   (tangent space at m)
    θ = (m cos‖g‖ + g sin‖g‖/‖g‖) · Σ w_i ‖x_i‖   (+ θ_base when a base is given)
Where Σ w_i u_i vanishes (e.g. two fine-tunes moved one norm element by ±1 bf16 ulp and a
third left it alone) the mean direction m is undefined; like SLERP's collinear case this
falls back to the Euclidean barycentre θ = Σ w_i x_i (+ θ_base). mergekit returns ≈ θ_base
there (its m is 0/ε); both agree whenever the moves cancel exactly.
"""

import math
from collections.abc import Sequence

import torch

from merging.finite import NonFiniteMergeError, all_finite
from merging.registry import PerModel, register
from merging.weighted_sum import gram, task_vector_sum, weighted_sum


def _nuslerp_vectors(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """SLERP along the last dimension (each row is one vector)."""
    u0 = v0 / torch.linalg.vector_norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.linalg.vector_norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (u0 * u1).sum(dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    spherical = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    return torch.where(colinear, (1 - t) * v0 + t * v1, spherical)


def _nuslerp_coefficients(t: float, g: torch.Tensor, eps: float = 1e-8) -> tuple[float, float]:
    """`_nuslerp_vectors` on the whole flattened tensors as (c0, c1) of c0·v0 + c1·v1, from
    their Gram matrix: the merge is then one weighted-sum pass."""
    n0, n1 = max(math.sqrt(max(float(g[0, 0]), 0.0)), 1e-7), max(math.sqrt(max(float(g[1, 1]), 0.0)), 1e-7)
    cos = max(-1.0, min(1.0, float(g[0, 1]) / (n0 * n1)))
    if 1 - cos * cos <= eps**2:
        return 1.0 - t, t
    theta = math.acos(cos)
    return math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)


def _combination(tensors: Sequence[torch.Tensor], base: torch.Tensor | None, coefs: Sequence[float],
                 out_dtype: torch.dtype | None) -> torch.Tensor:
    """Σ c_i x_i, or θ_base + Σ c_i (x_i − θ_base) with a base: one pass."""
    if base is None:
        return weighted_sum(tensors, coefs, out_dtype)
    return task_vector_sum(base, tensors, coefs, out_dtype)


def nuslerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weight: PerModel[float],
    nuslerp_row_wise: bool = False,
    nuslerp_flatten: bool = True,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    total = float(sum(weight))
    t = 0.5 if abs(total) < 1e-6 else float(weight[1]) / total
    if nuslerp_flatten:
        return _combination(tensors, base, _nuslerp_coefficients(t, gram(tensors, base)), out_dtype)
    v0, v1 = (x.float() for x in tensors)
    if base is not None:
        v0, v1 = v0 - base.float(), v1 - base.float()
    if nuslerp_row_wise:
        merged = _nuslerp_vectors(t, v0.transpose(0, -1), v1.transpose(0, -1)).transpose(0, -1)
    else:
        merged = _nuslerp_vectors(t, v0, v1)
    merged = (merged + base.float() if base is not None else merged).to(out_dtype or torch.float32)
    if not all_finite(merged):
        raise NonFiniteMergeError("merged values are NaN or inf")
    return merged


def multislerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weight: PerModel[float],
    normalize_weights: bool = True,
    eps: float = 1e-8,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The formula above, evaluated through the Gram matrix G_ij = ⟨x_i, x_j⟩.

    m, g and hence θ are linear combinations of the x_i, so their coefficients follow
    from G (in float64) and the result takes one weighted-sum pass: one pass for the
    N(N+1)/2 dot products and one for the sum, instead of materialising units, mean and
    tangents per element.
    """
    if len(tensors) == 1:
        return weighted_sum(tensors, [1.0], out_dtype)
    n = len(tensors)
    g = gram(tensors, base)
    w = torch.tensor([float(x) for x in weight], dtype=torch.float64)
    if normalize_weights:
        w = w / w.sum()
    norms = g.diagonal().clamp(min=0).sqrt()
    if float(norms.max()) < eps:  # no source moved this tensor (a frozen layer): nothing to merge
        return _combination(tensors, base, [0.0] * n, out_dtype)
    a = w / (norms + eps)                      # Σ w_i u_i = Σ a_i x_i
    mean_norm = float(a @ g @ a) ** 0.5
    if mean_norm < eps:  # the unit directions cancel: no mean direction, use the barycentre
        coef = w
    else:
        mu = a / mean_norm                      # m = Σ μ_i x_i
        dots = (g @ mu) / (norms + eps)         # ⟨u_i, m⟩
        gamma = a - float(w @ dots) * mu        # g = Σ γ_i x_i
        g_norm = max(float(gamma @ g @ gamma), 0.0) ** 0.5 + eps
        coef = (mu * math.cos(g_norm) + gamma * (math.sin(g_norm) / g_norm)) * float(norms @ w)
    return _combination(tensors, base, coef.tolist(), out_dtype)


register(nuslerp, "nuslerp", family="interpolation", base="optional", min_models=2, max_models=2)
register(multislerp, "multislerp", family="interpolation", base="optional")
