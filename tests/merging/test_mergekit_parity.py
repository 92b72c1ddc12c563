"""`run_search.py merge` equals mergekit (0.1.5, the peer) on the same YAML configs.

Same files in, same config (gradients and filters included), both run for real; the
deterministic methods must agree within float32 rounding when both compute in float32,
and within bf16 rounding for bf16 configs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import tiny_llama_state, write_folder
from run_search import main as soupsearch_main

import mergekit  # noqa: F401,E402  (a dev dependency: `bash setup.sh --dev` installs it)

GRADIENT_WEIGHT = [{"filter": "self_attn", "value": [0.2, 0.9]}, {"filter": "mlp", "value": [0.7, 0.1, 0.4]},
                   {"value": 0.5}]
CASES = {
    "linear": ({"weight": GRADIENT_WEIGHT}, {"weight": 0.5}, {}, True),
    "task_arithmetic": ({"weight": GRADIENT_WEIGHT}, {"weight": 0.3}, {"lambda": [1.0, 1.5]}, False),
    "slerp": (None, None, {"t": [{"filter": "self_attn", "value": [0.0, 0.5, 1.0]}, {"value": 0.3}]}, False),
    "nuslerp": ({"weight": 0.3}, {"weight": [0.5, 1.0]}, {}, False),
    "multislerp": ({"weight": 0.6}, {"weight": 0.4}, {}, False),
    "ties": ({"weight": GRADIENT_WEIGHT, "density": [0.2, 0.8]}, {"weight": 0.5, "density": 0.5},
             {"normalize": True, "int8_mask": True}, False),
    "breadcrumbs": ({"weight": 0.6, "density": 0.8, "gamma": 0.05}, {"weight": 0.4, "density": 0.7}, {}, False),
    "breadcrumbs_ties": ({"weight": 0.6, "density": 0.8}, {"weight": 0.4, "density": 0.7, "gamma": 0.1},
                         {"lambda": 0.8}, False),
    "model_stock": ({}, {}, {}, False),
    "karcher": (None, None, {}, True),
}


def _family(root: Path, dtype: torch.dtype) -> dict[str, Path]:
    base = tiny_llama_state(0)
    paths = {"base": write_folder(root / "base", {n: t.to(dtype) for n, t in base.items()})}
    for k, name in enumerate(("dpo", "kto", "orpo"), start=1):
        delta = tiny_llama_state(100 + k)
        paths[name] = write_folder(root / name, {n: (base[n] + 0.05 * delta[n]).to(dtype) for n in base})
    return paths


def _config(method: str, paths: dict[str, Path], dtype: str) -> dict:
    p1, p2, shared, base_in_models = CASES[method]
    models = []
    if method == "slerp":
        models = [{"model": str(paths["base"])}, {"model": str(paths["dpo"])}]
    elif method == "karcher":
        models = [{"model": str(paths[k])} for k in ("dpo", "kto", "orpo")]
    else:
        names = ("dpo", "kto", "orpo") if method == "model_stock" else ("dpo", "kto")
        params = [p1, p2, {}]
        models = [{"model": str(paths[n]), "parameters": params[i]} for i, n in enumerate(names)]
        if base_in_models:
            models.insert(0, {"model": str(paths["base"]), "parameters": {"weight": 0.25}})
    config = {"merge_method": method, "models": models, "parameters": shared, "dtype": dtype}
    if method != "karcher":
        config["base_model"] = str(paths["base"])
    return config


def _run_mergekit(config: dict, out: Path) -> dict[str, torch.Tensor]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_merge(MergeConfiguration.model_validate(config), str(out),
              MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
    return load_file(str(out / "model.safetensors"))


def _run_ours(config: dict, tmp: Path) -> dict[str, torch.Tensor]:
    cfg = tmp / "merge.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert soupsearch_main(["merge", str(cfg), str(tmp / "ours")]) == 0
    return load_file(str(tmp / "ours" / "model.safetensors"))


@pytest.mark.parametrize("method", sorted(CASES))
def test_float32_merge_equals_mergekit(method, tmp_path):
    paths = _family(tmp_path, torch.float32)
    config = _config(method, paths, "float32")
    theirs = _run_mergekit(config, tmp_path / "mergekit")
    ours = _run_ours(config, tmp_path)
    assert set(ours) == set(theirs)
    for name in theirs:
        assert torch.allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6), (method, name)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "slerp"])
def test_bf16_merge_within_bf16_rounding(method, tmp_path):
    paths = _family(tmp_path, torch.bfloat16)
    config = _config(method, paths, "bfloat16")
    theirs = _run_mergekit(config, tmp_path / "mergekit")
    ours = _run_ours(config, tmp_path)
    for name in theirs:
        a, b = ours[name].float(), theirs[name].float()
        assert ours[name].dtype == theirs[name].dtype == torch.bfloat16
        # mergekit rounds intermediates to bf16; allow a few bf16 ulps of the tensor's scale.
        assert (a - b).abs().max() <= 4 * 2**-8 * b.abs().max(), (method, name)
