"""Running a pass of `merging.kernels`: compiled where it pays, eager in chunks elsewhere.

torch.compile turns a kernel's chain of torch ops into one fused loop (inductor's C++ on
CPU, Triton on GPUs), reading each input once in its stored dtype; eager torch runs the
same chain as separate passes over float32 temporaries, which on CPU is ~10x slower on a
whole tensor, so eagerly a kernel runs over cache-sized chunks instead (the kernels take
the chunk's `start` for their index-based draws and thresholds: results do not depend on
the split). Compiling costs seconds per kernel and configuration, once per process (the
inductor cache on disk makes later processes faster), so it is used for tensors big
enough to repay it.

`SOUPSEARCH_COMPILE` chooses: `auto` (default: compile tensors of at least
COMPILE_MIN_ELEMENTS where a compiler is present), `1` (compile every tensor; fail if no
compiler), `0` (never compile).
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

CHUNK_ELEMENTS = 1 << 16          # eager chunks stay in the L2 cache with their float32 temporaries
COMPILE_MIN_ELEMENTS = 1 << 15    # smaller tensors merge eagerly in less time than a compiled call costs
Kernel = Callable[..., torch.Tensor | None]

# Each kernel is compiled once per configuration (keep kinds, number of models, dtypes);
# dynamo's default of 8 per function would send a search over all methods back to eager.
torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)


def mode() -> str:
    value = os.environ.get("SOUPSEARCH_COMPILE", "auto").strip().lower()
    if value not in ("auto", "1", "0"):
        raise ValueError(f"SOUPSEARCH_COMPILE must be auto, 1 or 0; got {value!r}")
    return value


@functools.cache
def compiler_missing(device_type: str) -> str | None:
    """Why torch.compile cannot build kernels for this device type (None: it can)."""
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed"
    if device_type != "cpu":
        return f"no compiled kernels for {device_type}"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        compiler = get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 - any failure to find one means eager
        return f"no C++ compiler for torch.compile ({exc})"
    return None if shutil.which(compiler) else f"no C++ compiler ({compiler!r}) on PATH"


def will_compile(numel: int, device: torch.device) -> bool:
    """Whether a kernel over `numel` elements on `device` runs compiled."""
    chosen = mode()
    if chosen == "0" or (chosen == "auto" and numel < COMPILE_MIN_ELEMENTS):
        return False
    reason = compiler_missing(device.type)
    if reason is None:
        return True
    if chosen == "1":
        raise RuntimeError(f"SOUPSEARCH_COMPILE=1 but {reason}")
    _warn_once(device.type, reason)
    return False


@functools.cache
def _warn_once(device_type: str, reason: str) -> None:
    warnings.warn(f"merges on {device_type} run eagerly in chunks, several times slower on big models: {reason}",
                  RuntimeWarning, stacklevel=3)


@functools.cache
def compiled_kernel(kernel: Kernel) -> Kernel:
    """The kernel under torch.compile (one wrapper per kernel; dynamic shapes, so one
    compilation serves every tensor size)."""
    return torch.compile(kernel, dynamic=True, fullgraph=True)


def _slice(t: Any, start: int, stop: int) -> Any:
    if t is None:
        return None
    if isinstance(t, list):
        return [None if x is None else x[start:stop] for x in t]
    return t[start:stop]


def run(kernel: Kernel, out: torch.Tensor | Sequence[torch.Tensor | None] | None,
        inputs: Sequence[torch.Tensor | None], *args: Any, compile: bool | None = None,
        **static: Any) -> torch.Tensor | None:
    """kernel(out, inputs, *args, start, **static) over flat `inputs` (and `out`, a tensor or
    a list of them), all of one length n: in one compiled call, or eagerly chunk by chunk,
    the returned reductions summed. `compile` overrides the policy (tests compare the two)."""
    first = next(t for t in inputs if t is not None)
    n = first.numel()
    if compile is None:
        compile = will_compile(n, first.device)
    if compile:
        return compiled_kernel(kernel)(list(out) if isinstance(out, (list, tuple)) else out, list(inputs), *args, 0,
                                       **static)
    total = None
    for start in range(0, max(n, 1), CHUNK_ELEMENTS):
        stop = min(n, start + CHUNK_ELEMENTS)
        part = kernel(_slice(out, start, stop), _slice(list(inputs), start, stop), *args, start, **static)
        if part is not None:
            total = part if total is None else total + part
    return total
