"""Shared fixtures: tiny Llama-shaped models written as real safetensors folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see run_search.py

import pytest
import torch
from safetensors.torch import save_file

def pytest_report_header(config) -> str:
    """Free space where the tests write, printed first: the suite writes ~2 GB of models, and an
    out-of-space machine otherwise shows up as dozens of unrelated-looking setup errors."""
    import shutil
    import tempfile

    where = tempfile.gettempdir()
    return f"free disk in {where}: {shutil.disk_usage(where).free / 1e9:.1f} GB (the suite needs about 4 GB)"


TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
    "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 3, "vocab_size": 40,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "float32", "max_position_embeddings": 64,
    "head_dim": 8,
}


def tiny_llama_state(seed: int, config: dict = TINY_CONFIG, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (v, h)
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes |= {p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                   p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                   p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                   p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
                   p + "post_attention_layernorm.weight": (h,)}
    state = {}
    for name, shape in sorted(shapes.items()):
        t = torch.randn(shape, generator=g) * 0.1
        if name.endswith("norm.weight"):
            t = 1.0 + t
        state[name] = t.to(dtype)
    return state


def write_folder(path: Path, state: dict[str, torch.Tensor], config: dict = TINY_CONFIG, shards: int = 1) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    names = sorted(state)
    if shards == 1:
        save_file({n: state[n].contiguous() for n in names}, str(path / "model.safetensors"))
        return path
    weight_map = {}
    for k in range(shards):
        part = names[k::shards]
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: state[n].contiguous() for n in part}, str(path / fname))
        weight_map |= {n: fname for n in part}
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


@pytest.fixture
def ray_cleanup():
    """Shut down the Ray a test started in this process (searches run in-process call ray.init)."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def tiny_family(tmp_path: Path) -> dict[str, Path]:
    """A base and three 'fine-tuned' variants (base + small seeded deltas), float32."""
    base = tiny_llama_state(0)
    paths = {"base": write_folder(tmp_path / "base", base)}
    for k, name in enumerate(("dpo", "kto", "orpo"), start=1):
        delta = tiny_llama_state(100 + k)
        state = {n: base[n] + 0.05 * (delta[n] - (1.0 if n.endswith("norm.weight") else 0.0)) for n in base}
        paths[name] = write_folder(tmp_path / name, state)
    return paths


@pytest.fixture(scope="session")
def smollm_base() -> Path:
    """The real small chat model as a bf16 safetensors folder, converted once and cached
    in data/example/base (shared with the main command)."""
    from filelock import FileLock

    from search.example import DEFAULT_DATA_DIR, convert_base

    base = DEFAULT_DATA_DIR / "base"
    base.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(DEFAULT_DATA_DIR / ".base.lock"):  # xdist workers: one converts, the others wait
        if not (base / "config.json").exists():
            convert_base(base)
    return base


def perturbed_copy(base: Path, out: Path, seed: int, relative_noise: float) -> Path:
    """θ·(1 + σ·N(0,1)): a deterministic model that answers differently from the base."""
    from merging import ModelFolder, write_model

    generator = torch.Generator().manual_seed(seed)
    with ModelFolder(base) as folder:
        tensors = ((name, (t.float() * (1 + relative_noise * torch.randn(t.shape, generator=generator))).to(t.dtype))
                   for name, t in folder.iter_tensors())
        return write_model(tensors, out, base_dir=base, force=True)


@pytest.fixture(scope="session")
def smollm_family(smollm_base, tmp_path_factory) -> dict[str, Path]:
    """The small model plus two seeded perturbations of it ("a" mild, "b" stronger)."""
    root = tmp_path_factory.mktemp("smollm-family")
    return {"base": smollm_base,
            "a": perturbed_copy(smollm_base, root / "a", seed=1, relative_noise=0.02),
            "b": perturbed_copy(smollm_base, root / "b", seed=2, relative_noise=0.08)}


@pytest.fixture(scope="module")
def vllm_api_server(smollm_base, tmp_path_factory):
    """vLLM's OpenAI-compatible server on the small model, base URL ".../v1" (judges.local_server;
    shared by the judge tests; module scope so its memory is freed after each module)."""
    from contextlib import ExitStack

    from judges.local_server import LocalServerError, openai_api_server

    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with ExitStack() as stack:
        try:
            url = stack.enter_context(openai_api_server(smollm_base, log))
        except LocalServerError as e:
            pytest.fail(str(e))
        yield url


EXAMPLE_STEPS = 2  # preference-optimisation steps per example variant in tests (the real example trains 20)
EXAMPLE_PROFILE_TOKENS = 12  # the behaviour check's answer length in tests (the real example uses 96)
EXAMPLE_HOMOGENEOUS = ("dpo",)  # one seeded re-run, for the homogeneous-pair tests


@pytest.fixture(scope="session")
def example_models(tmp_path_factory) -> dict[str, Path]:
    """The example family built the real way but short: base, dpo, kto, orpo and one
    homogeneous re-run (dpo-s1), shared by every test that needs trained variants, and by both
    xdist workers (`-n 2` in pyproject.toml): the first builds it (~80 s) in their common temp
    folder while the other waits on the lock, then reads where it is."""
    from filelock import FileLock

    from search.example import prepare_example

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-of-USER/pytest-N/, above every worker's own gwK/
    ready = root / "example-family.json"
    with FileLock(root / "example-family.lock"):
        if ready.exists():
            return {name: Path(path) for name, path in json.loads(ready.read_text()).items()}
        torch.set_num_threads(2)
        models = prepare_example(root / "example-family", steps=EXAMPLE_STEPS, profile_tokens=EXAMPLE_PROFILE_TOKENS,
                                 homogeneous=EXAMPLE_HOMOGENEOUS)
        ready.write_text(json.dumps({name: str(path) for name, path in models.items()}))
        return models
