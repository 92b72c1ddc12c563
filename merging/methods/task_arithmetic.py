"""Task arithmetic (Ilharco et al. 2023, arXiv:2212.04089).

Task vectors τ_i = θ_i − θ_base are added back to the base:

    θ = θ_base + λ · Σ_i w_i τ_i / D,   D = Σ_i w_i if normalize else 1

(mergekit semantics: a |D| < 1e-8 divisor is treated as 1; normalize defaults to false.)
"""

from collections.abc import Sequence

import torch

from merging.registry import PerModel, register
from merging.weighted_sum import weighted_sum


def task_arithmetic(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    weight: PerModel[float],
    normalize: bool = False,
    lambda_: float = 1.0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    divisor = float(sum(weight)) if normalize else 1.0
    if abs(divisor) < 1e-8:
        divisor = 1.0
    # θ_base + Σ c_i (θ_i − θ_base) = (1 − Σ c_i) θ_base + Σ c_i θ_i: one pass per model.
    coefs = [float(lambda_) * float(w) / divisor for w in weight]
    return weighted_sum([base, *tensors], [1.0 - sum(coefs), *coefs], out_dtype)


register(task_arithmetic, "task_arithmetic", family="task_vector", elementwise=True)
