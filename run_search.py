#!/usr/bin/env python
"""soupsearch command line.

    python run_search.py [--config configs/default.yaml] [--trials N]
                                              the multi-objective merge search (default)
    python run_search.py --resume EXP_DIR     continue a stopped search
    python run_search.py export EXP_DIR [--pick knee | --weights a=2,b=1] [--require "safety>=0.9"]
                                [--materialize OUT_DIR]   ship one merge of the front
    python run_search.py merge CONFIG OUT     one merge from a mergekit-style YAML
    python run_search.py prepare-example      build the example model family (base + DPO/KTO/ORPO variants)
    python run_search.py demo                 every merge method once on the example family
    python run_search.py methods              list the merge methods and their parameters
    python run_search.py check [--config C] [--references]
                                              preflight (models, eval set, judge, worker placement) and
                                              whether each objective separates the reference models
    python run_search.py study soups|methods [--config C]
                                              the heterogeneous-soups tables / the merge-method league
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# OpenMP threads that spin-wait between parallel regions turn a busy small machine into a
# crawl: a 0.3 s in-memory merge took 35 s with 2 torch threads while another process
# trained on the same 2 cores, 0.36 s with passive waiting. libgomp reads this once, when
# torch loads, so it is set here before any import of torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent
DEFAULT_THREADS = 2


def _parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = text.strip().upper().removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)


def cmd_merge(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from merging import Merger, load_plan, write_model

    plan = load_plan(args.config)
    _set_threads(args.threads)
    started = time.perf_counter()
    models = {ref: ref for ref in plan.referenced_models()}
    merger = Merger(models, plan.base_model, device=args.device, resident=False, allow_pickle=plan.allow_pickle)
    out_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        plan.out_dtype or plan.dtype or "")
    # `with`: a failed write closes the progress bar first, so the error gets a line of its own
    with tqdm(merger.merge(plan), total=len(merger.names), desc=f"merging ({plan.merge_method})",
              unit="tensor") as tensors:
        out = write_model(tensors, args.out_dir, base_dir=plan.base_model or plan.models[0].model, dtype=out_dtype,
                          max_shard_bytes=_parse_size(args.max_shard_size), force=args.force,
                          extra_files={"soupsearch_merge.yaml": Path(args.config).read_text()})
    merger.close()
    print(f"wrote {out} in {time.perf_counter() - started:.1f} s")
    return 0


def _set_threads(threads: int | None) -> None:
    """torch's CPU thread count: a setting, because on a loaded 2-core machine 1 can beat 2 by far."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_prepare_example(args: argparse.Namespace) -> int:
    from search.example import prepare_example

    _set_threads(args.threads)
    for name, path in prepare_example(Path(args.data_dir), steps=args.train_steps,
                                      homogeneous=args.homogeneous).items():
        print(f"{name:10s} {path}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from merging import METHODS, method_names

    for name in method_names():
        spec = METHODS[name]
        per_model = ", ".join(f"{k}={'required' if v is None else v}" for k, v in spec.model_params.items())
        shared = ", ".join(f"{k}={v}" for k, v in spec.shared_params.items())
        tags = [spec.family, f"base {spec.base}"] + (["random"] if spec.randomized else []) + \
            ([] if spec.mergekit else ["soupsearch only"])
        print(f"{name:18s} per-model: {per_model or '-'} | shared: {shared or '-'} | {', '.join(tags)}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from search import PreflightError, SearchConfigError, load_search_config, run_search

    exp_dir = Path(args.resume) if args.resume else None
    try:
        config = load_search_config(exp_dir / "config.yaml" if exp_dir else args.config)
    except SearchConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.trials:
        config.search.n_trials = args.trials
    try:
        run_search(config, exp_dir, resume=exp_dir is not None)
    except (FileExistsError, ConnectionError, PreflightError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    """One of the papers' studies on the configured family (see search/studies/)."""
    from search import PreflightError, SearchConfigError, load_search_config
    from search.studies import StudyError, run_methods_study, run_soups_study

    exp_dir = Path(args.resume) if args.resume else None
    try:
        config = load_search_config(exp_dir / "config.yaml" if exp_dir else args.config)
        if args.name:
            config.experiment.name = args.name
        elif not exp_dir:
            config.experiment.name = f"{config.experiment.name}-study-{args.kind}"
        run = run_soups_study if args.kind == "soups" else run_methods_study
        run(config, exp_dir, resume=exp_dir is not None)
    except (SearchConfigError, StudyError, FileExistsError, ConnectionError, PreflightError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Preflight (models, eval set, judge, worker placement), then whether each objective can
    guide the search: from the experiment's judged references, or judged now (--references)."""
    import tempfile

    import ray

    from search import (
        PreflightError, SearchConfigError, close_pool, load_search_config, objective_health, open_experiment,
        read_references, reference_items, resolve_models, run_preflight,
    )

    try:
        config = load_search_config(args.config)
        models = resolve_models(config)
        run_preflight(config, models[0])
        objectives = list(config.search.objectives)
        if args.references:
            with tempfile.TemporaryDirectory(prefix="soupsearch-check-") as scratch:
                exp = open_experiment(config, Path(scratch) / config.experiment.name, models=models)
                close_pool(exp.ctx)  # open_experiment printed each objective's health
        else:
            exp_dir = config.experiment_dir()
            references = read_references(exp_dir)
            if not references:
                print("objective health: no reference models judged yet for this experiment; the search judges them "
                      "first (or run `check --references` to judge them now, ~1 minute per model on a CPU)")
            for h in objective_health(reference_items(exp_dir, references), objectives) if references else []:
                print(("" if h.ok else "warning: ") + h.message() + f"  (references judged in {exp_dir})")
    except (SearchConfigError, ConnectionError, PreflightError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from search import ExportError
    from search.export import export

    try:
        result = export(Path(args.exp_dir), weights=args.weights, require=args.require,
                        materialize=Path(args.materialize) if args.materialize else None, force=args.force,
                        on=args.on)
    except (ExportError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"picked trial {result.trial_number} on its {result.picked_on} scores: "
          + ", ".join(f"{k}={v:.3f}" for k, v in result.scores.items()))
    if args.on == "holdout" and result.picked_on != "held-out":
        print("note: the front has no held-out scores (eval.holdout: 0, or validation did not finish): "
              "picked on the search items' scores, which overstate the front")
    for line in result.leads:
        print(f"  {line}")
    print(f"config:   {result.plan_path}")
    print(f"mergekit: {result.mergekit_path or '(method not in mergekit)'}")
    if result.model_dir:
        print(f"model:    {result.model_dir}  (vllm serve / transformers from_pretrained)")
    if result.beaten_by:
        print(f"warning: {', '.join(result.beaten_by)} (unmerged) scored at least as well on every objective and "
              f"better on one: shipping it unmerged may be the better choice", file=sys.stderr)
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    from search.example import run_example

    _set_threads(args.threads)
    methods = args.methods.split(",") if args.methods else None
    return run_example(Path(args.data_dir), Path(args.out_dir), train_steps=args.train_steps, methods=methods)


def _example_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch CPU threads (default {DEFAULT_THREADS}; try 1 when another job loads the machine)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="shorten each variant's preference-optimisation run to N steps (quick checks only)")


def build_parser() -> argparse.ArgumentParser:
    from search.example import DEFAULT_DATA_DIR

    parser = argparse.ArgumentParser(prog="run_search.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"), help="experiment config (YAML)")
    parser.add_argument("--trials", type=int, default=None, help="override search.n_trials")
    parser.add_argument("--resume", metavar="EXP_DIR", default=None,
                        help="continue a stopped search (its config.yaml); finished trials are kept, not re-run")
    parser.set_defaults(func=cmd_search)
    sub = parser.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help="every merge method once on the example family, timed (no search)")
    demo.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="where the example models live")
    demo.add_argument("--out-dir", default=str(ROOT / "outputs" / "example"), help="example outputs")
    demo.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    _example_options(demo)
    demo.set_defaults(func=cmd_example)

    merge = sub.add_parser("merge", help="merge models from a mergekit-style YAML config")
    merge.add_argument("config")
    merge.add_argument("out_dir")
    merge.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    merge.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    merge.add_argument("--max-shard-size", default="2GB", help="e.g. 500MB, 5GB")
    merge.add_argument("--threads", type=int, default=None)
    merge.set_defaults(func=cmd_merge)

    exp = sub.add_parser("export", help="write the chosen merge of a finished search as configs (and a model)")
    exp.add_argument("exp_dir")
    how = exp.add_mutually_exclusive_group()
    how.add_argument("--pick", choices=["knee"], default="knee", help="the front's knee point (default)")
    how.add_argument("--weights", help="best weighted sum instead, e.g. safety=2,factuality=1")
    exp.add_argument("--require", action="append", default=[], help='e.g. "safety>=0.9" or "safety>=best_source"')
    exp.add_argument("--on", choices=["holdout", "search"], default="holdout",
                     help="pick on the held-out items' scores (default, when the front was validated) or on the "
                          "search items' scores")
    exp.add_argument("--materialize", metavar="OUT_DIR", help="also write the merged model folder")
    exp.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    exp.set_defaults(func=cmd_export)

    prep = sub.add_parser("prepare-example", help="build the example model family (cached)")
    prep.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    from search.example import homogeneous_arg  # validates the method names for a clean usage error

    prep.add_argument("--homogeneous", type=homogeneous_arg, default=(), metavar="METHODS",
                      help="also re-train these methods (comma-separated, e.g. dpo,kto) with seed 1 as <method>-s1: "
                           "homogeneous pairs for the merge study")
    _example_options(prep)
    prep.set_defaults(func=cmd_prepare_example)

    study = sub.add_parser("study", help="reproduce a study: soups (heterogeneous-soups tables, λ sweeps) or "
                                         "methods (merge-method league table)")
    study.add_argument("kind", choices=["soups", "methods"])
    study.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"), help="experiment config (YAML)")
    study.add_argument("--name", default=None, help="experiment name (default: <config name>-study-<kind>)")
    study.add_argument("--resume", metavar="EXP_DIR", default=None, help="continue a stopped study")
    study.set_defaults(func=cmd_study)

    check = sub.add_parser("check", help="preflight only: models, eval set, judge, worker placement")
    check.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"), help="experiment config (YAML)")
    check.add_argument("--references", action="store_true",
                       help="also answer and judge the base and sources now and say whether each objective separates "
                            "them (whether it can guide the search)")
    check.set_defaults(func=cmd_check)

    sub.add_parser("methods", help="list merge methods").set_defaults(func=cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    from merging import CheckpointError, IncompatibleModelsError, ModelWriteError, OutputExistsError, PlanError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (PlanError, CheckpointError, IncompatibleModelsError, OutputExistsError, ModelWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
