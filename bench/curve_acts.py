#!/usr/bin/env python
"""Does a plan's per-layer curve act? Merge it as exported and with every per-layer list flattened to its mean.

A searched layer curve is only worth its trials if it changes the merge. This takes a plan
(e.g. `runs/default/export/trial_NNNN.soupsearch.yaml`, whose model paths are real folders),
replaces every gradient (a list of numbers, wherever it sits: a parameter, a filter entry's
value) by the mean of its values, merges both in memory and prints how many tensors differ
and by how much.

    .venv/bin/python bench/curve_acts.py runs/default/export/trial_0000.soupsearch.yaml
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path
from typing import Any

import torch

from merging import Merger, parse_plan, read_yaml


def flattened(value: Any) -> Any:
    """`value` with every list of numbers replaced by its mean (filter lists are walked into)."""
    if isinstance(value, list) and value and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        return statistics.fmean(value)
    if isinstance(value, list):
        return [flattened(x) for x in value]
    if isinstance(value, dict):
        return {k: flattened(x) for k, x in value.items()}
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan", type=Path, help="a merge plan YAML with real model paths")
    args = ap.parse_args()
    plan = read_yaml(args.plan, ValueError)
    flat = flattened(copy.deepcopy(plan))
    if flat == plan:
        print("the plan has no per-layer list: nothing to compare")
        return 0
    curved, even = parse_plan(plan, str(args.plan)), parse_plan(flat, f"{args.plan} (flattened)")
    merger = Merger({m: m for m in curved.referenced_models()}, curved.base_model, device="cpu", resident=True)
    try:
        a, b = dict(merger.merge(curved)), dict(merger.merge(even))
    finally:
        merger.close()
    differ = [n for n in a if not torch.equal(a[n], b[n])]
    largest = max((a[n].float() - b[n].float()).abs().max().item() for n in a)
    print(f"{curved.merge_method}: {len(differ)} of {len(a)} tensors differ when every per-layer list is flattened "
          f"to its mean (max |Δ| = {largest:.3g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
