"""Weighted sums and Gram matrices over whole tensors: the arithmetic of linear,
task_arithmetic and the SLERP family.

Each is one fused pass (`merging.kernels`) that reads every input in its stored dtype,
compiled or eagerly in chunks (`merging.compile`). A SLERP-like merge is two of them: the
dot products its angles and norms come from, then the weighted sum its coefficients give.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging import kernels
from merging.compile import Kernel, run
from merging.finite import NonFiniteMergeError


def weighted_sum(tensors: Sequence[torch.Tensor], coefs: Sequence[float],
                 out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Σ_i coefs[i]·tensors[i] in `out_dtype` (float32 when None); NaN/inf raises NonFiniteMergeError."""
    if len(coefs) != len(tensors):
        raise ValueError(f"expected {len(tensors)} coefficients (one per tensor), got {len(coefs)}")
    return _combine(kernels.weighted_sum_, tensors, coefs, out_dtype)


def task_vector_sum(base: torch.Tensor, tensors: Sequence[torch.Tensor], coefs: Sequence[float],
                    out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """base + Σ_i coefs[i]·(tensors[i] − base) in `out_dtype` (float32 when None): the task
    vectors' combination added back to the base; NaN/inf raises NonFiniteMergeError."""
    if len(coefs) != len(tensors):
        raise ValueError(f"expected {len(tensors)} coefficients (one per model), got {len(coefs)}")
    return _combine(kernels.task_vector_sum_, [base, *tensors], coefs, out_dtype)


def gram(tensors: Sequence[torch.Tensor], base: torch.Tensor | None = None) -> torch.Tensor:
    """G_ij = ⟨d_i, d_j⟩ over the flattened d_i = tensors[i] − base (tensors[i] without a
    base), as a float64 (N, N) matrix, from one pass over the inputs."""
    n = len(tensors)
    pairs = tuple((i, j) for i in range(n) for j in range(i, n))
    flats = [t.contiguous().view(-1) for t in tensors]
    sums = run(kernels.dot_products, None, [None if base is None else base.contiguous().view(-1), *flats],
               pairs=pairs)
    out = torch.empty(n, n, dtype=torch.float64)
    for (i, j), value in zip(pairs, sums.double().cpu().tolist()):
        out[i, j] = out[j, i] = value
    return out


def _combine(kernel: Kernel, tensors: Sequence[torch.Tensor], coefs: Sequence[float],
             out_dtype: torch.dtype | None) -> torch.Tensor:
    """One pass of `kernel` (out, flat inputs, coefficients) into a new `out_dtype` tensor."""
    first = tensors[0]
    out = torch.empty(first.shape, dtype=out_dtype or torch.float32, device=first.device)
    flats = [t.contiguous().view(-1) for t in tensors]
    bad = run(kernel, out.view(-1), flats, torch.tensor([float(c) for c in coefs], dtype=torch.float32,
                                                          device=first.device))
    if int(bad):
        raise NonFiniteMergeError(f"{int(bad)} merged values are NaN or inf")
    return out
