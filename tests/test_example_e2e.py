"""End to end on the real small model: GGUF -> safetensors, merge via the CLI, load and answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from merging import Merger, ModelFolder, parse_plan
from run_search import main as soupsearch_main
from search.example_family import prepare_example
from search.example_demo import answer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict[str, Path]:
    return prepare_example(tmp_path_factory.mktemp("example"))


def test_prepared_base_is_smollm2_and_answers(family):
    with ModelFolder(family["base"]) as base:
        assert base.n_layers() == 30 and base.vocab_size() == 49152
        assert len(base.tensor_names()) == 272  # tied head: no lm_head.weight stored
        assert base.dtype("model.embed_tokens.weight") == torch.bfloat16
    assert "Paris" in answer(family["base"], ("What is the capital of France?",), max_new_tokens=16)[0]


def test_cli_merge_writes_a_loadable_model_that_still_answers(family, tmp_path):
    config = tmp_path / "merge.yaml"
    config.write_text(
        f"merge_method: alignment_slerp\nbase_model: {family['base']}\n"
        f"models:\n  - model: {family['variant_a']}\n  - model: {family['variant_b']}\n"
        "parameters:\n  t: [0.3, 0.7]\ndtype: bfloat16\n")
    out = tmp_path / "merged"
    assert soupsearch_main(["merge", str(config), str(out), "--max-shard-size", "100MB"]) == 0
    assert (out / "model.safetensors.index.json").exists() and (out / "tokenizer.json").exists()
    assert (out / "soupsearch_merge.yaml").read_text() == config.read_text()
    assert "Paris" in answer(out, ("What is the capital of France?",), max_new_tokens=16)[0]
    assert soupsearch_main(["merge", str(config), str(out)]) == 2  # exists, no --force


def test_in_memory_merge_of_real_model_matches_the_source_at_the_endpoint(family):
    merger = Merger({k: str(v) for k, v in family.items()}, base="base")
    plan = parse_plan({"merge_method": "linear", "models": [{"model": "variant_a", "parameters": {"weight": 1.0}},
                                                            {"model": "variant_b", "parameters": {"weight": 0.0}}]})
    merged = merger.merge_to_dict(plan)
    with ModelFolder(family["variant_a"]) as a:
        assert all(torch.equal(merged[n], a.get(n)) for n in merger.names)  # linear [1, 0] gives model 1 exactly


def test_default_command_runs_the_example(family, tmp_path, capsys):
    assert soupsearch_main(["--data-dir", str(family["base"].parent), "--out-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "alignment_slerp" in printed and "ties" in printed
    assert (tmp_path / "merge_timings.csv").read_text().count("\n") >= 10
    assert (tmp_path / "merged-alignment_slerp" / "model.safetensors").exists()
