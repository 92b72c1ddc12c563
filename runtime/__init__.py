"""What this machine can run, and how: the rules that serving/ and judges/ share.

A merged model served by `serving/` and a judge model run by `judges/` must pick their dtype
and vLLM's CPU settings by the same rules, or a judge would answer under other numerics than
the models it judges. Those rules live here, below both packages, so neither imports the
other for them. No Ray, no engines, no merging: only the CPU's capabilities, the dtype rule
that follows from them, and vLLM's presence and CPU environment.

    from runtime import resolve_dtype, vllm_on_cpu
    dtype = resolve_dtype("auto", on_cpu=vllm_on_cpu(), vllm=True)
"""

from runtime.cpu import cpu_flags, cpu_has_amx, cpu_has_native_bf16, resolve_dtype
from runtime.vllm_env import configure_cpu_environment, vllm_available, vllm_cpu_environment, vllm_on_cpu

__all__ = [
    "configure_cpu_environment", "cpu_flags", "cpu_has_amx", "cpu_has_native_bf16", "resolve_dtype",
    "vllm_available", "vllm_cpu_environment", "vllm_on_cpu",
]
