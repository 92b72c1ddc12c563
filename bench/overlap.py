"""Trials per hour with judging overlapped (workers.trials_ahead) against one trial per worker.

A trial holds its merge worker only to merge, swap and generate; with `trials_ahead: 0`
(today's behaviour before issue 19) the worker then waits while the trial's answers are
judged. This bench runs the same seeded search twice on the small model (base + two
perturbed copies) against an OpenAI-compatible judge of fixed latency (tests/judge_server.py,
"good@<seconds>"), once with `trials_ahead: 0` and once with the default (one per judge
actor), and prints trials/hour of the search phase (references excluded) and the ratio.

    .venv/bin/python bench/overlap.py [--trials 6] [--items 16] [--latency 1.5]

Expect the ratio to approach (generate + judge) / max(generate, judge) when the judge's
latency is the bottleneck; with the instant rubric judge there is nothing to overlap.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--items", type=int, default=16, help="eval items per trial (eval.subset)")
    parser.add_argument("--latency", type=float, default=1.5, help="seconds per judge request")
    args = parser.parse_args()

    import ray

    from conftest import perturbed_copy
    from judge_server import JudgeServer
    from search.config import parse_search_config
    from search.driver import concurrent_trials, run_optuna
    from search.example import DEFAULT_DATA_DIR, convert_base
    from search.experiment import open_experiment

    base = DEFAULT_DATA_DIR / "base"
    if not (base / "config.json").exists():
        convert_base(base)
    results = {}
    with tempfile.TemporaryDirectory() as tmp, JudgeServer() as judge:
        root = Path(tmp)
        family = {"a": perturbed_copy(base, root / "a", seed=1, relative_noise=0.02),
                  "b": perturbed_copy(base, root / "b", seed=2, relative_noise=0.08)}
        for ahead in (0, None):
            config = parse_search_config({
                "experiment": {"name": f"overlap-{ahead}", "dir": str(root / "runs")},
                "models": {"base": str(base), "sources": {k: str(v) for k, v in family.items()}},
                "space": {"methods": ["linear", "task_arithmetic"]},
                "search": {"sampler": "random", "n_trials": args.trials, "seed": 0},
                "workers": {"count": 1, "cpus": 2, "trials_ahead": ahead},
                "serving": {"backend": "transformers", "generation": {"max_tokens": 24, "batch_size": 16}},
                "judging": {"judge": {"backend": "openai", "base_url": judge.url, "model": f"good@{args.latency}",
                                      "api_key_env": None, "timeout_s": 60}},
                "eval": {"set": "soupsearch-eval-v1", "subset": args.items, "holdout": 0},
            })
            exp = open_experiment(config, None)
            started = time.perf_counter()
            run_optuna(config, exp)
            wall = time.perf_counter() - started
            ray.shutdown()
            results[concurrent_trials(config)] = wall
            print(f"trials at once {concurrent_trials(config)}: {args.trials} trials in {wall:.1f} s, "
                  f"{3600 * args.trials / wall:.0f} trials/hour", flush=True)
    (one, two) = (results[k] for k in sorted(results))
    print(f"judge latency {args.latency} s per request: {one / two:.2f}x the trials per hour with judging overlapped")


if __name__ == "__main__":
    main()
