"""Preflight: every problem a config has is reported at once, before anything expensive starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from merging.memory import model_sizes
from search.config import SearchConfigError, parse_search_config
from search.preflight import Problem, check_inputs, check_memory, check_models, check_placement, holdout_split
from conftest import TINY_CONFIG, tiny_llama_state, write_folder

ROOT = Path(__file__).resolve().parents[2]


def _config(**workers: object):
    return parse_search_config({"models": {"base": "b", "sources": {"x": "x", "y": "y"}},
                                "workers": {"count": 2, "cpus": 1, **workers}})


def _node(alive: bool = True, **resources: float) -> dict:
    return {"Alive": alive, "Resources": resources}


def test_placement_fits_one_worker_per_node_by_custom_resource():
    config = _config(resources={"merge_slot": 1})
    nodes = [_node(CPU=2, merge_slot=1), _node(CPU=1, merge_slot=1)]
    assert check_placement(config, nodes) == []


def test_placement_reports_how_many_workers_fit_and_what_the_nodes_have():
    config = _config(resources={"merge_slot": 1})
    nodes = [_node(CPU=4, merge_slot=1), _node(CPU=4), _node(False, CPU=8, merge_slot=1)]  # one dead node
    [problem] = check_placement(config, nodes)
    assert problem.where == "workers"
    assert "2 merge workers need {CPU: 1, merge_slot: 1} each on one node; the cluster can place 1" in problem.what
    assert "CPU=4, merge_slot=1" in problem.what


def test_gpu_workers_on_a_cpu_cluster_and_judges_without_cpus():
    [gpus] = check_placement(_config(gpus=1), [_node(CPU=16)])
    assert "GPU: 1" in gpus.what and "can place 0" in gpus.what
    [judges] = check_placement(_config(cpus=2, judges=2), [_node(CPU=5)])
    assert judges.where == "workers.judges" and "1 CPUs are left" in judges.what


def test_models_mismatch_missing_folder_and_quantized_tensors_are_all_listed(tiny_family, tmp_path):
    wide = dict(TINY_CONFIG, intermediate_size=48)
    quantized = tiny_llama_state(5)
    quantized["model.layers.0.mlp.up_proj.weight"] = quantized["model.layers.0.mlp.up_proj.weight"].to(torch.int8)
    models = {"base": str(tiny_family["base"]), "wide": str(write_folder(tmp_path / "wide", tiny_llama_state(4, wide),
                                                                       wide)),
              "gone": str(tmp_path / "nowhere"), "q": str(write_folder(tmp_path / "q", quantized))}
    problems = check_models(models)
    text = "\n".join(map(str, problems))
    assert "models.sources.gone: " in text and "no config.json" in text
    assert "wide: tensor model.layers.0.mlp.up_proj.weight has shape [48, 16], the base base has [32, 16]" in text
    assert "models.sources.q: tensors in int8" in text
    assert all(isinstance(p, Problem) and p.fix for p in problems)


def test_check_command_lists_every_problem_and_starts_nothing(tiny_family, tmp_path):
    """Bad model, bad eval file, judge nobody answers, GPUs the machine lacks: one report."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wide = dict(TINY_CONFIG, hidden_size=24, head_dim=12)
    bad_eval = tmp_path / "eval.jsonl"
    bad_eval.write_text('{"id": "1", "prompt": "hi", "gold": "hello", "category": "nonsense"}\n')
    config = {
        "experiment": {"name": "pre", "dir": str(tmp_path / "runs")},
        "models": {"base": str(tiny_family["base"]), "sources": {
            "dpo": str(tiny_family["dpo"]), "wide": str(write_folder(tmp_path / "wide", tiny_llama_state(4, wide), wide))}},
        "workers": {"count": 1, "cpus": 1, "gpus": 1},
        "judging": {"judge": {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "judge",
                              "api_key_env": None, "max_retries": 0, "timeout_s": 2}},
        "eval": {"set": str(bad_eval)},
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, str(ROOT / "run_search.py"), "check", "--config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr
    assert "Traceback" not in err
    assert "preflight found" in err and "nothing expensive was started" in err
    assert "models.sources: wide: tensor model.embed_tokens.weight has shape [40, 24]" in err
    assert "eval.set: " in err and "nonsense" in err
    assert "judging.judge: the judge did not answer a test request" in err
    assert "workers: 1 merge workers need {CPU: 1, GPU: 1} each" in err
    assert not (tmp_path / "runs").exists()  # no experiment folder for a search that never started


def test_a_holdout_too_small_and_a_match_metric_without_answers_are_problems(tiny_family):
    """eval.holdout and search.objectives problems come with the models' and the judge's, before
    any model loads."""
    config = parse_search_config({"models": {"base": str(tiny_family["base"]), "sources": {
        "dpo": str(tiny_family["dpo"]), "kto": str(tiny_family["kto"])}},
        "search": {"objectives": ["safety", "contains_answer"]}, "eval": {"set": "smoke"}})
    eval_set, problems = check_inputs(config, {k: str(tiny_family[k]) for k in ("base", "dpo", "kto")})
    assert len(eval_set) == 8
    assert [p.where for p in problems] == ["eval.holdout", "search.objectives"]
    assert "safe: 4 items -> 3 search, 1 held out" in problems[0].what and "eval.holdout" in problems[0].fix
    assert "contains_answer compares answers with the eval set's 'answer' column" in problems[1].what
    ok = config.model_copy(update={"eval": config.eval.model_copy(update={"holdout": 0.5}),
                                   "search": config.search.model_copy(update={"objectives": ["safety"]})})
    assert check_inputs(ok, {k: str(tiny_family[k]) for k in ("base", "dpo", "kto")})[1] == []
    search, held = holdout_split(ok, eval_set)
    assert len(search) == len(held) == 4


def test_judge_gpus_and_tensor_parallel_engines_are_checked():
    [judge] = check_placement(_config(gpus=1, judge_gpus=2, judges=1), [_node(CPU=8, GPU=3)])
    assert judge.where == "workers.judge_gpus" and "1 GPUs are left" in judge.what
    with pytest.raises(SearchConfigError, match=r"workers.gpus \(1\) must be ≥ serving.engine.tensor_parallel_size"):
        parse_search_config({"models": {"base": "b", "sources": {"x": "x", "y": "y"}}, "workers": {"gpus": 1},
                             "serving": {"engine": {"tensor_parallel_size": 2}}})


def test_pickle_checkpoint_is_refused_unless_the_config_opts_in(tiny_family, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_family["dpo"] / "config.json").read_text())
    torch.save(tiny_llama_state(7), pickled / "pytorch_model.bin")
    models = {"base": str(tiny_family["base"]), "p": str(pickled)}
    [problem] = check_models(models)
    assert problem.where == "models.sources.p" and "allow_pickle" in problem.what
    assert check_models(models, allow_pickle=True) == []
    assert parse_search_config({"models": {"base": "b", "sources": {"x": "x", "y": "y"}}}).models.allow_pickle is False


# --------------------------------------------------------------------------- memory

GB = 1 << 30


def _eight_b(monkeypatch, sources: str, **engine: object):
    """An 8B bf16 base with three sources (16 GiB each, embeddings of 1 GiB), one worker on
    one 80 GiB GPU of a node with 512 GiB for Ray."""
    monkeypatch.setattr("search.preflight.model_sizes", lambda paths, allow_pickle=False: ([16 * GB] * 4, GB))
    config = parse_search_config({"models": {"base": "b", "sources": {"x": "x", "y": "y", "z": "z"}},
                                  "workers": {"count": 1, "cpus": 8, "gpus": 1, "sources": sources,
                                              "gpu_memory_gib": 80},
                                  "serving": {"backend": "vllm", "engine": engine}})
    nodes = [_node(CPU=16, GPU=1, memory=512 * GB)]
    return check_memory(config, {"base": "b", "x": "x", "y": "y", "z": "z"}, nodes)


def test_an_8b_three_source_merge_fits_one_80gb_gpu_only_with_sources_on_the_host(monkeypatch):
    [problem] = _eight_b(monkeypatch, "gpu")
    assert problem.where == "workers.sources"
    # engine 0.85·80 = 68 GiB, sources 4·16 = 64, staged merge 16, working set (4+2)·1 = 6
    assert "needs 154.0 GiB on its GPU (engine 68.0 GiB + sources 64.0 GiB + staged merge 16.0 GiB + " \
           "per-tensor working set 6.0 GiB), more than the GPU's 80.0 GiB" in problem.what
    assert "workers.sources: host" in problem.fix
    assert _eight_b(monkeypatch, "host") == []  # GPU: 68 + 12 working set; host: 64 + 16 staged
    assert _eight_b(monkeypatch, "auto") == []  # auto picks host here
    [tight] = _eight_b(monkeypatch, "host", gpu_memory_utilization=0.95)  # 76 + 12 > 80
    assert "lower serving.engine.gpu_memory_utilization" in tight.fix


def test_cpu_workers_sharing_a_node_are_refused_when_their_sources_do_not_fit(tiny_family):
    models = {k: str(tiny_family[k]) for k in ("base", "dpo", "kto")}
    config = parse_search_config({"models": {"base": models["base"], "sources": {k: models[k] for k in ("dpo", "kto")}},
                                  "workers": {"count": 3, "cpus": 1, "sources": "host"},
                                  "serving": {"backend": "transformers"}})
    sizes, _ = model_sizes(list(models.values()))
    per_worker = sizes[0] + sum(sizes) + sizes[0]  # engine weights, resident sources, staged merge
    small = [_node(CPU=4, memory=3 * per_worker - 1)]
    [problem] = check_memory(config, models, small)
    assert "3 merge worker(s) on one node need" in problem.what and "workers.sources: disk" in problem.fix
    assert check_memory(config, models, [_node(CPU=4, memory=3 * per_worker)]) == []
    disk = config.model_copy(update={"workers": config.workers.model_copy(update={"sources": "disk"})})
    assert check_memory(disk, models, small) == []
