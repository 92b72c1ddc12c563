"""Σ_i c_i x_i over whole tensors: the arithmetic of linear and task_arithmetic.

On CPU with the native kernels built, one pass reads every input in its stored dtype
and writes `out_dtype` directly (merging.native); elsewhere torch computes the same
chain, x_0·c_0 then fused multiply-adds in input order, which the kernel follows too, so
both give the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging.finite import NonFiniteMergeError, all_finite
from merging.native import ops


def weighted_sum(tensors: Sequence[torch.Tensor], coefs: Sequence[float],
                 out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Σ_i coefs[i]·tensors[i] in `out_dtype` (float32 when None); NaN/inf raises NonFiniteMergeError."""
    out_dtype = out_dtype or torch.float32
    if ops.applies(tensors):
        tensors = ops.one_dtype(tensors)
        out = torch.empty(tensors[0].shape, dtype=out_dtype)
        rules = []
        for c in coefs:
            rule = ops.keep_everything()
            rule.coef = float(c)
            rules.append(rule)
        if ops.mix(tensors, None, out, rules, consensus=False, normalize=False, lambda_=1.0):
            raise NonFiniteMergeError("merged values are NaN or inf")
        return out
    out = torch.mul(tensors[0].float(), float(coefs[0]))
    for tensor, c in zip(tensors[1:], coefs[1:], strict=True):
        out.add_(tensor.float(), alpha=float(c))
    if out_dtype != torch.float32:
        out = out.to(out_dtype)  # (checked after the cast: float16 overflows)
    if not all_finite(out):
        raise NonFiniteMergeError("merged values are NaN or inf")
    return out
