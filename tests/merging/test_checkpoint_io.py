"""Model folders: sharded I/O round trip, pickle refusal, tied embeddings, compatibility errors, atomic writes."""

import json

import pytest
import torch

from conftest import TINY_CONFIG, tiny_llama_state, write_folder
from merging import CheckpointError, IncompatibleModelsError, ModelFolder, OutputExistsError, check_compatible, write_model


def test_sharded_round_trip_preserves_every_tensor_and_dtype(tmp_path):
    state = tiny_llama_state(1, dtype=torch.bfloat16)
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.float16)  # mixed dtypes survive
    out = write_model(iter(state.items()), tmp_path / "out", base_dir=None, max_shard_bytes=3000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shard_files = sorted(set(index["weight_map"].values()))
    assert len(shard_files) > 2 and all((out / f).exists() for f in shard_files)
    assert shard_files[0] == f"model-00001-of-{len(shard_files):05d}.safetensors"
    with ModelFolder(out) as folder:
        assert folder.tensor_names() == sorted(state)
        for name, tensor in state.items():
            loaded = folder.get(name)
            assert loaded.dtype == tensor.dtype and torch.equal(loaded, tensor)


def test_single_file_and_metadata_copied_from_base(tmp_path):
    base = write_folder(tmp_path / "base", tiny_llama_state(0))
    (base / "tokenizer.json").write_text("{}")
    (base / "generation_config.json").write_text('{"do_sample": false}')
    out = write_model(ModelFolder(base).iter_tensors(), tmp_path / "out", base_dir=base, dtype=torch.bfloat16)
    assert (out / "model.safetensors").exists() and not (out / "model.safetensors.index.json").exists()
    assert (out / "tokenizer.json").exists() and (out / "generation_config.json").exists()
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert ModelFolder(out).dtype("model.norm.weight") == torch.bfloat16


def test_lazy_reads_only_touch_requested_tensor(tmp_path):
    state = tiny_llama_state(2)
    folder = ModelFolder(write_folder(tmp_path / "m", state, shards=3))
    assert folder.shape("model.layers.1.mlp.up_proj.weight") == (32, 16)
    assert folder.dtype("model.norm.weight") == torch.float32
    assert not folder._handles or len(folder._handles) <= 2  # only the shards asked about were opened
    assert torch.equal(folder.get("lm_head.weight"), state["lm_head.weight"])
    assert folder.n_layers() == 3 and folder.vocab_size() == 40


def test_tied_head_reads_as_embedding(tmp_path):
    config = {**TINY_CONFIG, "tie_word_embeddings": True}
    state = tiny_llama_state(3, config)
    folder = ModelFolder(write_folder(tmp_path / "tied", state, config))
    assert "lm_head.weight" not in folder.tensor_names() and folder.has("lm_head.weight")
    assert torch.equal(folder.get("lm_head.weight"), state["model.embed_tokens.weight"])


def test_pickle_checkpoints_are_refused_unless_allowed(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    state = tiny_llama_state(4)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*execute code.*allow_pickle: true"):
        ModelFolder(folder)
    assert torch.equal(ModelFolder(folder, allow_pickle=True).get("model.norm.weight"), state["model.norm.weight"])


def test_missing_folder_and_missing_shard(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ModelFolder(tmp_path / "nope")
    folder = write_folder(tmp_path / "m", tiny_llama_state(0), shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        ModelFolder(folder)


def test_all_mismatches_are_listed_with_model_tensor_and_shapes(tmp_path):
    base_state = tiny_llama_state(0)
    base = ModelFolder(write_folder(tmp_path / "base", base_state))
    bad = dict(base_state)
    bad["model.layers.0.mlp.up_proj.weight"] = torch.zeros(31, 16)
    bad["model.layers.2.self_attn.q_proj.weight"] = torch.zeros(16, 15)
    del bad["model.layers.1.post_attention_layernorm.weight"]
    other = ModelFolder(write_folder(tmp_path / "bad", bad))
    with pytest.raises(IncompatibleModelsError) as info:
        check_compatible("base", base, {"kto": other})
    problems = info.value.problems
    assert len(problems) == 3
    assert "kto: tensor model.layers.0.mlp.up_proj.weight has shape [31, 16], the base base has [32, 16]" in problems
    assert "kto: tensor model.layers.2.self_attn.q_proj.weight has shape [16, 15], the base base has [16, 16]" in problems
    assert any("missing 1 tensor" in p and "post_attention_layernorm" in p for p in problems)


def test_vocab_mismatch_has_its_own_message(tmp_path):
    base = ModelFolder(write_folder(tmp_path / "base", tiny_llama_state(0)))
    config = {**TINY_CONFIG, "vocab_size": 41}
    other = ModelFolder(write_folder(tmp_path / "big", tiny_llama_state(0, config), config))
    with pytest.raises(IncompatibleModelsError, match=r"big: vocabulary size 41 differs from the base base's 40"):
        check_compatible("base", base, {"big": other})


def test_existing_output_needs_force_and_is_replaced_atomically(tmp_path):
    state = tiny_llama_state(5)
    out = write_model(iter(state.items()), tmp_path / "out", base_dir=None)
    with pytest.raises(OutputExistsError, match="--force"):
        write_model(iter(state.items()), out, base_dir=None)
    (out / "stale.txt").write_text("old")
    write_model(iter(state.items()), out, base_dir=None, force=True)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folders left behind


def test_failure_midway_leaves_no_partial_folder(tmp_path):
    def tensors():
        yield "a", torch.ones(3)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_model(tensors(), tmp_path / "out", base_dir=None)
    assert list(tmp_path.iterdir()) == []
