"""Karcher (Fréchet) mean on the hypersphere, with mergekit 0.1.5 semantics (mergekit cites
arXiv:2603.04972; the Riemannian centre of mass is Karcher 1977, doi:10.1002/cpa.3160300502).

Each flattened tensor x_i splits into a norm n_i = ‖x_i‖ and a direction u_i = x_i / n_i.
The direction of the merge is the weighted Karcher mean of the u_i on the unit sphere,

    m = argmin_{‖m‖=1} Σ_i α_i d(m, u_i)²,   d(m, u) = arccos⟨m, u⟩,

found by Riemannian gradient descent from the normalised weighted average: with θ_i = d(m, u_i),

    g = Σ_i α_i θ_i / sin θ_i · (u_i − cos θ_i · m)          (log map, tangent at m)
    m ← cos‖g‖ · m + sin‖g‖ · g/‖g‖                          (exp map), renormalised,

for at most max_iter steps, stopping once ‖g‖ < tol; then θ = (Σ_i α_i n_i) · m.

α_i = w_i / Σ_j w_j; mergekit has no weights (α_i = 1/N), which is the default w_i = 1.
Inputs with n_i ≤ tol take no part in the direction (their α is dropped and the rest
renormalised), but still count in the norm Σ α_i n_i, as in mergekit. A lone input is
returned unchanged; if every input has n_i ≤ tol the result is zero.
"""

import math
from collections.abc import Sequence

import torch

from merging.registry import PerModel, register

_CHUNK_ELEMENTS = 1 << 22


def _gram(flat: Sequence[torch.Tensor]) -> torch.Tensor:
    """G_ij = ⟨x_i, x_j⟩ in float64, in one pass over the inputs (chunked, so the float64
    copy stays small). Nearly parallel checkpoints have cosines within ~1e-5 of 1, where
    float32 dot products would lose the angle the mean depends on."""
    numel = flat[0].numel()
    gram = torch.zeros(len(flat), len(flat), dtype=torch.float64, device=flat[0].device)
    for start in range(0, numel, _CHUNK_ELEMENTS):
        chunk = torch.stack([x[start:start + _CHUNK_ELEMENTS] for x in flat]).double()
        gram.addmm_(chunk, chunk.T)
    return gram


def karcher(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weight: PerModel[float, 1.0] | None = None,
    max_iter: int = 10,
    tol: float = 1e-5,
) -> torch.Tensor:
    """The iteration above, carried out on coefficients instead of full tensors.

    m and g always lie in the span of the u_i, so they are kept as coefficient vectors
    c (m = Σ c_i u_i) and every inner product comes from the Gram matrix of the units;
    the tensors are read once for G and once for the final weighted sum, instead of
    2·N passes per iteration.
    """
    if len(tensors) == 1:
        return tensors[0].clone()
    weights = [1.0] * len(tensors) if weight is None else [float(w) for w in weight]
    if len(weights) != len(tensors):
        raise ValueError(f"karcher: {len(weights)} weights for {len(tensors)} tensors")
    total = sum(weights)
    if abs(total) < 1e-12:
        raise ValueError(f"karcher: weights {weights} sum to zero")
    alphas = [w / total for w in weights]

    flat = [t.reshape(-1) for t in tensors]
    gram = _gram(flat)
    norms = gram.diagonal().clamp(min=0).sqrt().tolist()
    valid = [i for i, n in enumerate(norms) if n > tol]
    if not valid:
        return torch.zeros_like(tensors[0])

    unit_norms = torch.tensor([norms[i] for i in valid], dtype=torch.float64, device=gram.device)
    units = gram[valid][:, valid] / torch.outer(unit_norms, unit_norms)   # ⟨u_i, u_j⟩
    a = torch.tensor([alphas[i] for i in valid], dtype=torch.float64, device=gram.device)
    a = a / a.sum()

    def norm(c: torch.Tensor) -> float:
        return math.sqrt(max(float(c @ units @ c), 0.0))

    c = a.clone()
    mean_norm = norm(c)
    if mean_norm < tol:
        c = torch.zeros_like(a)
        c[0] = 1.0
    else:
        c /= mean_norm
    for _ in range(max_iter):
        cos = (units @ c).clamp(-1.0, 1.0)
        theta = torch.arccos(cos)
        moving = theta >= tol                 # inputs already at m contribute no tangent
        factor = torch.where(moving, a * theta / torch.sin(torch.where(moving, theta, torch.ones_like(theta))),
                             torch.zeros_like(theta))
        g = factor - float(factor @ cos) * c  # Σ_i f_i (u_i − cos_i m)
        g_norm = norm(g)
        if g_norm < tol:
            break
        c = math.cos(g_norm) * c + (math.sin(g_norm) / g_norm) * g
        unit_norm = norm(c)
        if unit_norm > tol:
            c /= unit_norm

    scale = sum(alpha * n for alpha, n in zip(alphas, norms))
    coefficients = (scale * c / unit_norms).tolist()
    out = torch.zeros_like(tensors[0])
    for i, coefficient in zip(valid, coefficients):
        out.add_(tensors[i], alpha=coefficient)
    return out


register(karcher, "karcher", family="interpolation", base="none")
