"""`run_search.py demo`: every merge method once on the real example family, timed (no search).

Prepares (once) the base and its DPO/KTO/ORPO variants, loads them once into a resident
`Merger` (as a search worker does), merges one plan per registered method in memory,
times each, writes one merged model folder (alignment SLERP of the DPO and KTO variants,
as in the heterogeneous-soups study) and has transformers answer a few chat prompts with
the base, the variants and the merge side by side.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from merging import METHODS, Merger, method_names, parse_plan, write_model
from search.example.family import VARIANTS, prepare_example

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
    """A plan dict for `method` over the example family (defaults for unlisted methods).

    Methods that take at most k sources (slerp: 1; alignment_slerp, nuslerp: 2) get the
    first k variants; the rest merge all of them."""
    model_params, shared = _PER_METHOD_PARAMS.get(method, ({}, {}))
    sources = variants[:METHODS[method].max_models or len(variants)]
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


def run_example(data_dir: Path, out_dir: Path, train_steps: int | None = None,
                methods: list[str] | None = None) -> int:
    """Merge the example family with every method (or `methods`); torch's thread count is set by the caller."""
    console = Console()
    unknown = sorted(set(methods or []) - set(method_names()))
    if unknown:
        console.print(f"[red]error[/red]: unknown method(s) {unknown}; known: {', '.join(method_names())}")
        return 2
    paths = prepare_example(data_dir, steps=train_steps, profile=False, console=console)  # behaviour: prepare-example
    base, variants = "base", list(VARIANTS)
    started = time.perf_counter()
    merger = Merger({k: str(v) for k, v in paths.items()}, base="base", device="cpu", resident=True)
    console.print(f"loaded {len(paths)} models ({merger.source_bytes() / 1e6:.0f} MB) "
                  f"in {time.perf_counter() - started:.1f} s; merging in memory, nothing written per merge")
    table = Table(title="in-memory merges of the example family (SmolLM2-135M, bf16)")
    for col in ("method", "seconds", "GB/s read", "Δ vs base (rel. L2)"):
        table.add_column(col)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in methods or method_names():
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
    merged_label = f"alignment_slerp({variants[0]}, {variants[1]}) t=0.5"
    answers = {label: answer(folder, PROMPTS) for label, folder in
               [*((n, paths[n]) for n in (base, *variants)), (merged_label, merged_dir)]}
    for i, prompt in enumerate(PROMPTS):
        console.print(f"\n[bold]{prompt}[/bold]")
        for label, texts in answers.items():
            console.print(f"  [cyan]{label}[/cyan] → {texts[i]}")
    console.print(f"\nfiles: {out_dir / 'merge_timings.csv'}, {merged_dir}")
    return 0
