"""Linear weight averaging (model soups, Wortsman et al. 2022, arXiv:2203.05482).

    θ = Σ_i w_i θ_i / Σ_i w_i        (normalize: true, the default)
    θ = Σ_i w_i θ_i                  (normalize: false)
"""

from collections.abc import Sequence

import torch

from merging.registry import PerModel, register
from merging.weighted_sum import weighted_sum


def linear(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weight: PerModel[float],
    normalize: bool = True,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    total = float(sum(weight)) if normalize else 1.0
    if abs(total) < 1e-8:
        raise ValueError(f"linear: weights {list(weight)} sum to zero; cannot normalize")
    # Normalised coefficients up front: one pass per model, no separate division pass.
    return weighted_sum(tensors, [float(w) / total for w in weight], out_dtype)


register(linear, "linear", family="interpolation", base="none", elementwise=True)
