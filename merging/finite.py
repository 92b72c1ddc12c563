"""Non-finite merge results: the error and the fast check behind it."""

import torch


class NonFiniteMergeError(ArithmeticError):
    """A merge produced NaN/inf; the search records the trial as failed with this message."""


def all_finite(values: torch.Tensor) -> bool:
    """True unless some element is NaN/inf. A float32 sum is NaN or inf whenever an element
    is, and costs one vectorised pass (isfinite on bf16 is several times slower); only when
    the sum is not finite (overflow of huge finite values included) does the exact test run."""
    return bool(torch.isfinite(values.sum(dtype=torch.float32))) or bool(torch.isfinite(values).all())
