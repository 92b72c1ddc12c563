#!/usr/bin/env python
"""soupsearch command line.

    python run_search.py                      the embedded example (see README)
    python run_search.py merge CONFIG OUT     one merge from a mergekit-style YAML
    python run_search.py prepare-example      build the example model family
    python run_search.py methods              list the merge methods and their parameters

The multi-objective search itself (the default command once it lands) is a later issue;
until then the default command runs the example merges on the real small model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = text.strip().upper().removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)


def cmd_merge(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from merging import Merger, load_plan, write_model

    plan = load_plan(args.config)
    torch.set_num_threads(args.threads) if args.threads else None
    started = time.perf_counter()
    models = {ref: ref for ref in plan.referenced_models()}
    merger = Merger(models, plan.base_model, device=args.device, resident=False, allow_pickle=plan.allow_pickle)
    out_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        plan.out_dtype or plan.dtype or "")
    tensors = tqdm(merger.merge(plan), total=len(merger.names), desc=f"merging ({plan.merge_method})", unit="tensor")
    out = write_model(tensors, args.out_dir, base_dir=plan.base_model or plan.models[0].model, dtype=out_dtype,
                      max_shard_bytes=_parse_size(args.max_shard_size), force=args.force,
                      extra_files={"soupsearch_merge.yaml": Path(args.config).read_text()})
    merger.close()
    print(f"wrote {out} in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_prepare_example(args: argparse.Namespace) -> int:
    from search.example_family import prepare_example

    for name, path in prepare_example(Path(args.data_dir)).items():
        print(f"{name:10s} {path}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from merging import METHODS, method_names

    for name in method_names():
        spec = METHODS[name]
        per_model = ", ".join(f"{k}={'required' if v is None else v}" for k, v in spec.model_params.items())
        shared = ", ".join(f"{k}={v}" for k, v in spec.shared_params.items())
        tags = [f"base {spec.base}"] + (["random"] if spec.randomized else []) + ([] if spec.mergekit else ["soupsearch only"])
        print(f"{name:18s} per-model: {per_model or '-'} | shared: {shared or '-'} | {', '.join(tags)}")
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    from search.example_demo import run_example

    return run_example(Path(args.data_dir), Path(args.out_dir), threads=args.threads)


def build_parser() -> argparse.ArgumentParser:
    from search.example_family import DEFAULT_DATA_DIR

    parser = argparse.ArgumentParser(prog="run_search.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="where the example models live")
    parser.add_argument("--out-dir", default=str(ROOT / "outputs" / "example"), help="example outputs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(func=cmd_example)
    sub = parser.add_subparsers(dest="command")

    merge = sub.add_parser("merge", help="merge models from a mergekit-style YAML config")
    merge.add_argument("config")
    merge.add_argument("out_dir")
    merge.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    merge.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    merge.add_argument("--max-shard-size", default="2GB", help="e.g. 500MB, 5GB")
    merge.add_argument("--threads", type=int, default=None)
    merge.set_defaults(func=cmd_merge)

    prep = sub.add_parser("prepare-example", help="build the example model family (cached)")
    prep.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    prep.set_defaults(func=cmd_prepare_example)

    sub.add_parser("methods", help="list merge methods").set_defaults(func=cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    from merging import CheckpointError, IncompatibleModelsError, OutputExistsError, PlanError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (PlanError, CheckpointError, IncompatibleModelsError, OutputExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
