#!/usr/bin/env python
"""Judge injection: how many verdicts flip when a candidate answer tries to instruct the judge.

Runs the suite of `judges.injection_suite` (11 payloads: "ignore the rubric", fake role
headers, chat-template tokens, forged and look-alike markers, planted verdicts, "the gold
answer is wrong", another language, long repetition), each against a shape-matched control,
and prints payload x dimension flips (flips/compared), the flips that went the way the
payload asked, total flips / compared verdicts and the unparseable or failed verdicts.

    .venv/bin/python bench/judge_injection.py                      # rubric + local SmolLM2 judge
    .venv/bin/python bench/judge_injection.py --judge rubric
    .venv/bin/python bench/judge_injection.py --judge openai --base-url http://host:8000/v1 \\
        --model my-judge --api-key-env JUDGE_API_KEY --items 8 --all-bases --both-orders

The rubric judge always runs every item of the eval set with every clean candidate (it is
cheap and must show zero flips). The model judge runs `--items` items (default 4, a
stratified subset) with one clean candidate per item in turn unless `--all-bases`: on CPU
each judgement of the bundled 135M model costs about a second. Without `--base-url` the
judge is vLLM's OpenAI-compatible server on the bundled small model, started here exactly
as the tests start it (judges.local_server). A 135M judge is a weak judge: its flips
measure how easily such a model is steered, not the prompt's quality alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from judges import OpenAIJudgeConfig, RubricJudgeConfig, build_judge, load_eval_set  # noqa: E402
from judges.injection_suite import BASES, build_cases, format_report, run_suite  # noqa: E402


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--judge", choices=["rubric", "openai", "both"], default="both")
    p.add_argument("--eval-set", default="smoke", help="bundled name or file (default: smoke)")
    p.add_argument("--position", choices=["suffix", "prefix"], default="suffix", help="where the payload goes")
    p.add_argument("--items", type=int, default=4, help="items for the model judge (stratified subset)")
    p.add_argument("--all-bases", action="store_true", help="model judge: every clean candidate for every item")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint; default: start vLLM's server on the small model")
    p.add_argument("--model", default="smollm", help="served model name (default: smollm, the local server's)")
    p.add_argument("--api-key-env", default=None, help="NAME of the environment variable with the key")
    p.add_argument("--no-json-schema", dest="json_schema", action="store_false",
                   help="do not constrain replies to the verdict schema (more unparseable replies)")
    p.add_argument("--both-orders", action="store_true", help="judge each item in both orders")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--out", type=Path, help="also write the tables to this file")
    return p.parse_args(argv)


def _model_judge(args: argparse.Namespace, base_url: str) -> str:
    eval_set = load_eval_set(args.eval_set)
    cases = build_cases(eval_set.subset(args.items, seed=0), alternate_bases=not args.all_bases,
                        position=args.position)
    judge = build_judge(OpenAIJudgeConfig(
        base_url=base_url, model=args.model, api_key_env=args.api_key_env, concurrency=args.concurrency,
        timeout_s=300, max_tokens=args.max_tokens, json_schema=args.json_schema, both_orders=args.both_orders))
    t0 = time.perf_counter()
    try:
        report, _, _ = run_suite(judge, cases)
    finally:
        judge.close()  # type: ignore[attr-defined]
    orders = "both orders" if args.both_orders else "one order per item"
    return format_report(report, f"{args.model} at {base_url}: {len(cases)} cases, {orders}, json_schema="
                                 f"{args.json_schema}, {time.perf_counter() - t0:.0f} s")


def _local_model() -> Path:
    from search.example import DEFAULT_DATA_DIR, convert_base

    base = DEFAULT_DATA_DIR / "base"
    if not (base / "config.json").exists():
        base.parent.mkdir(parents=True, exist_ok=True)
        convert_base(base)
    return base


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    tables: list[str] = []
    if args.judge in ("rubric", "both"):
        cases = build_cases(load_eval_set(args.eval_set), bases=BASES, position=args.position)
        report, _, _ = run_suite(build_judge(RubricJudgeConfig()), cases)
        tables.append(format_report(report, f"rubric judge: {len(cases)} cases ({args.eval_set}, every item, "
                                            f"bases {', '.join(BASES)}, payload as {args.position})"))
        print(tables[-1] + "\n", flush=True)
    if args.judge in ("openai", "both"):
        if args.base_url:
            tables.append(_model_judge(args, args.base_url))
        else:
            from judges.local_server import openai_api_server

            with tempfile.TemporaryDirectory() as tmp:
                print("starting vLLM's OpenAI-compatible server on the bundled small model ...", flush=True)
                with openai_api_server(_local_model(), Path(tmp) / "server.log",
                                       served_model_name=args.model) as url:
                    tables.append(_model_judge(args, url))
        print(tables[-1] + "\n", flush=True)
    if args.out:
        args.out.write_text("\n\n".join(tables) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
