#!/usr/bin/env python
"""Per-trial cost of a new merge: in-place weight swap vs. write-to-disk + fresh engine.

Same model family, same plans, same run. For each plan:
  swap     the running engine merges in its worker and reloads weights in place
           (`serving` vLLM backend; transformers backend too with --transformers)
  restart  merge, write the model folder to disk, start a new vLLM engine on it
           (in this already-warm process: a lower bound on a real server restart,
           which also pays Python and vLLM imports, ~15 s more here)
then both answer the same prompts; the answers must match (same weights, greedy).

    .venv/bin/python bench/swap_vs_restart.py [--plans 3] [--threads 2] [--transformers]

Uses the example family from `run_search.py prepare-example` (made if missing).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from merging import Merger, parse_plan, write_model  # noqa: E402
from search.example import prepare_example  # noqa: E402
from serving import EngineSettings, GenerationSettings, ModelSet, create_backend  # noqa: E402

PROMPTS = ["What is the capital of France?", "Give me one tip for sleeping better.", "Name three primary colours."]
CONVERSATIONS = [[{"role": "user", "content": p}] for p in PROMPTS]


def plans(sources: list[str], n: int) -> list[dict]:
    """n linear plans sweeping λ between the first two sources (cheap merges: the swap cost shows)."""
    a, b = sources[:2]
    return [{"merge_method": "linear", "dtype": "bfloat16",
             "models": [{"model": a, "parameters": {"weight": 1 - lam}}, {"model": b, "parameters": {"weight": lam}}]}
            for lam in [(i + 1) / (n + 1) for i in range(n)]]


def restart_trial(plan: dict, model_set: ModelSet, settings: EngineSettings, gen: GenerationSettings,
                  workdir: Path) -> tuple[dict[str, float], list[str]]:
    from vllm import LLM, SamplingParams

    t0 = time.perf_counter()
    merger = Merger({k: str(v) for k, v in model_set.models.items()}, base=model_set.base, device="cpu", resident=False)
    out = write_model(merger.merge(parse_plan(plan)), workdir / "merged", base_dir=model_set.base_dir, force=True)
    merger.close()
    t1 = time.perf_counter()
    llm = LLM(model=str(out), dtype=settings.dtype, seed=0, max_model_len=settings.max_model_len, enforce_eager=True)
    t2 = time.perf_counter()
    outputs = llm.chat(CONVERSATIONS, SamplingParams(temperature=0.0, max_tokens=gen.max_tokens, seed=gen.seed),
                       use_tqdm=False)
    t3 = time.perf_counter()
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    shutil.rmtree(out)
    return {"merge+write": t1 - t0, "engine start": t2 - t1, "generate": t3 - t2}, [o.outputs[0].text.strip() for o in outputs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plans", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--transformers", action="store_true", help="also time the transformers backend's swap")
    args = ap.parse_args()
    console = Console()
    paths = prepare_example()
    sources = [k for k in paths if k != "base"]
    model_set = ModelSet({k: v for k, v in paths.items()}, base="base")
    settings = EngineSettings(threads=args.threads, max_model_len=1024)
    gen = GenerationSettings(max_tokens=args.max_tokens)
    trial_plans = plans(sources, args.plans)
    console.print(f"load average {os.getloadavg()[0]:.2f}; {len(trial_plans)} plans over {sources[:2]}")

    rows: dict[str, list[dict[str, float]]] = {}
    answers: dict[str, list[list[str]]] = {}
    backends = ["vllm"] + (["transformers"] if args.transformers else [])
    for name in backends:
        t0 = time.perf_counter()
        engine = create_backend(name, model_set, settings)
        console.print(f"{name}: engine + sources loaded once in {time.perf_counter() - t0:.1f} s")
        for plan in trial_plans:
            timing = engine.apply_plan(parse_plan(plan))
            t1 = time.perf_counter()
            out = engine.generate(CONVERSATIONS, gen)
            rows.setdefault(f"swap ({name})", []).append(
                {"merge": timing.merge_s, "load into engine": timing.load_s, "generate": time.perf_counter() - t1})
            answers.setdefault(name, []).append(out)
        engine.close()
        del engine
        gc.collect()

    with tempfile.TemporaryDirectory(dir=paths["base"].parent) as tmp:
        for plan in trial_plans:
            timing, out = restart_trial(plan, model_set, settings, gen, Path(tmp))
            rows.setdefault("disk + fresh engine (vllm)", []).append(timing)
            answers.setdefault("restart", []).append(out)

    table = Table(title=f"per-trial seconds, median of {len(trial_plans)} plans (SmolLM2-135M, CPU)")
    for col in ("path", "step", "median s"):
        table.add_column(col)
    totals = {}
    for path, trials in rows.items():
        for step in trials[0]:
            table.add_row(path, step, f"{statistics.median(t[step] for t in trials):.2f}")
        totals[path] = statistics.median(sum(t[s] for s in t if s != "generate") for t in trials)
        table.add_row(path, "[bold]weights ready[/bold]", f"[bold]{totals[path]:.2f}[/bold]")
    console.print(table)
    swap = totals["swap (vllm)"]
    restart = totals["disk + fresh engine (vllm)"]
    console.print(f"swap is {restart / swap:.0f}x faster than disk + restart to get a new merge served "
                  f"({swap:.2f} s vs {restart:.2f} s; load average now {os.getloadavg()[0]:.2f})")
    same = answers["vllm"] == answers["restart"]
    console.print(f"answers identical between swap and restart: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
