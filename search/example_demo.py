"""The default command until the search lands: every merge method on the real example model.

Loads the example family once into a resident `Merger` (as a search worker will), merges
one plan per registered method in memory, times each, writes one merged model folder and
has transformers answer a few chat prompts with it, next to the base's answers.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from merging import Merger, method_names, parse_plan, write_model
from search.example_family import prepare_example

PROMPTS = ("What is the capital of France?", "Give me one tip for sleeping better.")

# A plan per method over the example family; `None` weights mean "the method has none".
_PER_METHOD_PARAMS: dict[str, tuple[dict, dict]] = {
    "linear": ({"weight": 0.5}, {}),
    "task_arithmetic": ({"weight": 0.5}, {"lambda": 1.0}),
    "slerp": ({}, {"t": 0.5}),
    "alignment_slerp": ({}, {"t": 0.5}),
    "nuslerp": ({"weight": 0.5}, {}),
    "multislerp": ({"weight": 0.5}, {}),
    "ties": ({"weight": 0.5, "density": 0.5}, {}),
    "dare_linear": ({"weight": 0.5, "density": 0.5}, {}),
    "dare_ties": ({"weight": 0.5, "density": 0.5}, {}),
    "della": ({"weight": 0.5, "density": 0.5}, {}),
    "della_linear": ({"weight": 0.5, "density": 0.5}, {}),
    "breadcrumbs": ({"weight": 0.5, "density": 0.9}, {}),
    "breadcrumbs_ties": ({"weight": 0.5, "density": 0.9}, {}),
}


def example_plan(method: str, base: str, variants: list[str]) -> dict:
    """A plan dict for `method` over the example family (defaults for unlisted methods)."""
    model_params, shared = _PER_METHOD_PARAMS.get(method, ({}, {}))
    sources = variants[:1] if method == "slerp" else variants
    models = [{"model": v, "parameters": dict(model_params)} for v in sources]
    if method in ("linear", "karcher"):
        models.insert(0, {"model": base, "parameters": dict(model_params)})
    return {"merge_method": method, "base_model": base, "models": models, "parameters": shared, "dtype": "bfloat16"}


def answer(model_dir: Path, prompts: tuple[str, ...], max_new_tokens: int = 40) -> list[str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    answers = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


def run_example(data_dir: Path, out_dir: Path, threads: int | None = None) -> int:
    console = Console()
    if threads:
        torch.set_num_threads(threads)
    paths = prepare_example(data_dir)
    base, variants = "base", [k for k in paths if k != "base"]
    started = time.perf_counter()
    merger = Merger({k: str(v) for k, v in paths.items()}, base="base", device="cpu", resident=True)
    console.print(f"loaded {len(paths)} models ({merger.source_bytes() / 1e6:.0f} MB) "
                  f"in {time.perf_counter() - started:.1f} s; merging in memory, nothing written per merge")
    table = Table(title="in-memory merges of the example family (SmolLM2-135M, bf16)")
    for col in ("method", "seconds", "GB/s read", "Δ vs base (rel. L2)"):
        table.add_column(col)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in method_names():
        plan = parse_plan(example_plan(method, base, variants), f"example plan for {method}")
        t0 = time.perf_counter()
        merged = merger.merge_to_dict(plan)
        seconds = time.perf_counter() - t0
        read = merger.source_bytes() * len({m.model for m in plan.models} | {base}) / len(paths)
        num = sum(float((merged[n].float() - merger.tensor(base, n).float()).norm() ** 2) for n in merger.names)
        den = sum(float(merger.tensor(base, n).float().norm() ** 2) for n in merger.names)
        rows.append({"method": method, "seconds": round(seconds, 3), "gb_per_s": round(read / seconds / 1e9, 3),
                     "rel_l2_vs_base": (num / den) ** 0.5})
        table.add_row(method, f"{seconds:.2f}", f"{read / seconds / 1e9:.2f}", f"{(num / den) ** 0.5:.4f}")
    console.print(table)
    with open(out_dir / "merge_timings.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    plan = parse_plan(example_plan("alignment_slerp", base, variants), "alignment_slerp example")
    merged_dir = write_model(merger.merge(plan), out_dir / "merged-alignment_slerp", base_dir=paths["base"],
                             dtype=torch.bfloat16, force=True)
    for label, folder in (("base", paths["base"]), ("alignment_slerp t=0.5", merged_dir)):
        for prompt, text in zip(PROMPTS, answer(folder, PROMPTS)):
            console.print(f"[bold]{label}[/bold] · {prompt}\n  → {text}")
    console.print(f"\nfiles: {out_dir / 'merge_timings.csv'}, {merged_dir}")
    console.print("The variants are seeded stand-ins until the DPO/KTO/ORPO family and the search land.")
    return 0
