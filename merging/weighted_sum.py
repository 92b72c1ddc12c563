"""Σ_i c_i x_i over whole tensors: the arithmetic of linear and task_arithmetic.

One fused pass (`merging.kernels.weighted_sum_`) reads every input in its stored dtype
and writes `out_dtype` directly, compiled or eagerly in chunks (`merging.compile`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging import kernels
from merging.compile import run
from merging.finite import NonFiniteMergeError


def weighted_sum(tensors: Sequence[torch.Tensor], coefs: Sequence[float],
                 out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Σ_i coefs[i]·tensors[i] in `out_dtype` (float32 when None); NaN/inf raises NonFiniteMergeError."""
    if len(coefs) != len(tensors):
        raise ValueError(f"expected {len(tensors)} coefficients (one per tensor), got {len(coefs)}")
    first = tensors[0]
    out = torch.empty(first.shape, dtype=out_dtype or torch.float32, device=first.device)
    flats = [t.contiguous().view(-1) for t in tensors]
    bad = run(kernels.weighted_sum_, out.view(-1), flats,
              torch.tensor([float(c) for c in coefs], dtype=torch.float32, device=first.device))
    if int(bad):
        raise NonFiniteMergeError(f"{int(bad)} merged values are NaN or inf")
    return out
