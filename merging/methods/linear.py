"""Linear weight averaging (model soups, Wortsman et al. 2022, arXiv:2203.05482).

    θ = Σ_i w_i θ_i / Σ_i w_i        (normalize: true, the default)
    θ = Σ_i w_i θ_i                  (normalize: false)
"""

from collections.abc import Sequence

import torch

from merging.registry import MethodSpec, register


def linear(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weight: Sequence[float],
    normalize: bool = True,
) -> torch.Tensor:
    total = float(sum(weight)) if normalize else 1.0
    if abs(total) < 1e-8:
        raise ValueError(f"linear: weights {list(weight)} sum to zero; cannot normalize")
    # Normalised coefficients up front: one pass per model, no separate division pass.
    coefs = [float(w) / total for w in weight]
    out = torch.mul(tensors[0], coefs[0])
    for tensor, c in zip(tensors[1:], coefs[1:], strict=True):
        out.add_(tensor, alpha=c)
    return out


register(MethodSpec("linear", linear, model_params={"weight": None}, shared_params={"normalize": True},
                    base="none", elementwise=True))
