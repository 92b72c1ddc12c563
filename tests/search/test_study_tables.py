"""The soups study's Table 1 from fake per-item indicators (pure; no models, no judge).

Every interval must belong to the value printed beside it: the value averages the
mean-diffs of the λ ∈ {0.25, 0.5, 0.75} merges, so its interval must be the bootstrap of
that λ-average (issue 16), not of one merge's mean-diff alone.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from judges import bootstrap_mean
from search.studies import tables as study_tables
from search.config import DIMENSIONS
from search.studies import SoupPoint, markdown, meandiff_table, soup_rows

N_ITEMS = 60
LAMBDAS = (0.25, 0.5, 0.75)
# λ = 0.5 scores far above the sources, λ = 0.25 / 0.75 far below: their average sits
# nowhere near the λ = 0.5 merge's own mean-diff.
RATES = {"dpo": 0.5, "kto": 0.5, 0.25: 0.1, 0.5: 0.95, 0.75: 0.1}


def _indicators(rate: float, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    return {d: {f"item{i:03d}": float(x) for i, x in enumerate(rng.random(N_ITEMS) < rate)} for d in DIMENSIONS}


def _wtr(items: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"wtr.{d}": float(np.mean(list(items[d].values()))) for d in DIMENSIONS}


def _study(seed: int = 0) -> tuple[pd.DataFrame, dict, dict]:
    """trials rows of one lerp dpo+kto sweep (λ 0 and 1 included, as the e2e test runs it),
    references, and items keyed as search.studies.report loads them; row WTRs are the items' means."""
    rng = np.random.default_rng(seed)
    items = {f"ref_{m}": _indicators(RATES[m], rng) for m in ("dpo", "kto")}
    references = {m: _wtr(items[f"ref_{m}"]) for m in ("dpo", "kto")}
    rows = []
    for number, lam in enumerate((0.0, *LAMBDAS, 1.0)):
        merge = items[{0.0: "ref_dpo", 1.0: "ref_kto"}[lam]] if lam in (0.0, 1.0) else _indicators(RATES[lam], rng)
        items[f"trial_{number:04d}"] = merge
        point = SoupPoint("heterogeneous", "dpo", "kto", "lerp", lam)
        rows.append({"trial_number": number, "method": "linear", "status": "ok",
                     "params": json.dumps(point.params()), **_wtr(merge)})
    return soup_rows(pd.DataFrame(rows)), references, items


def _hand_value(items: dict, dim: str, keep: set[str] | None = None) -> float:
    """mean over λ of [WTR(merge_λ) − ½(WTR(dpo) + WTR(kto))], each WTR on the `keep` items."""
    def wtr(key: str) -> float:
        xs = items[key][dim]
        return float(np.mean([x for i, x in xs.items() if keep is None or i in keep]))
    merges = [f"trial_{n:04d}" for n in (1, 2, 3)]  # λ = 0.25, 0.5, 0.75
    return float(np.mean([wtr(m) - 0.5 * (wtr("ref_dpo") + wtr("ref_kto")) for m in merges]))


def test_table1_interval_contains_the_lambda_averaged_value_it_is_printed_with():
    soups, references, items = _study()
    table = meandiff_table(soups, references, items, n_boot=1000)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["lambdas"] == 3  # λ = 0 and 1 are the sources and are left out
    for d in DIMENSIONS:
        expected = _hand_value(items, d)
        lam05 = float(np.mean(list(items["trial_0002"][d].values()))) - 0.5 * (
            references["dpo"][f"wtr.{d}"] + references["kto"][f"wtr.{d}"])
        assert abs(lam05 - expected) > 0.3, "fixture: the λ = 0.5 merge must differ strongly from the average"
        assert row[d] == pytest.approx(expected), d
        assert row[f"{d}_low"] <= row[d] <= row[f"{d}_high"], (d, row[d], row[f"{d}_low"], row[f"{d}_high"])
        assert row[f"{d}_items"] == N_ITEMS
    # and what REPORT.md prints: `value [low, high]`, the value inside its own interval
    line = markdown(table, ["method", "pair", *DIMENSIONS], intervals=True).splitlines()[2]
    cells = re.findall(r"([+-]\d\.\d+) \[([+-]\d\.\d+), ([+-]\d\.\d+)\]", line)
    assert len(cells) == len(DIMENSIONS), line
    for d, (value, low, high) in zip(DIMENSIONS, cells):
        assert float(low) <= float(value) <= float(high), (d, line)


def test_table1_value_and_interval_use_the_items_every_merge_and_source_scored():
    soups, references, items = _study(seed=1)
    # the λ = 0.75 merge was not scored on the first ten items, kto not on the last five
    items["trial_0003"] = {d: {i: x for i, x in xs.items() if i >= "item010"} for d, xs in items["trial_0003"].items()}
    items["ref_kto"] = {d: {i: x for i, x in xs.items() if i < "item055"} for d, xs in items["ref_kto"].items()}
    keep = {f"item{i:03d}" for i in range(10, 55)}
    table = meandiff_table(soups, references, items, n_boot=500)
    row = table.iloc[0]
    for d in DIMENSIONS:
        assert row[d] == pytest.approx(_hand_value(items, d, keep)), d
        assert row[f"{d}_low"] <= row[d] <= row[f"{d}_high"], d
        assert row[f"{d}_items"] == len(keep)


def test_lambda_mean_diff_is_bootstrap_mean_over_per_item_lambda_averages():
    _, _, items = _study(seed=2)
    merges = [items[f"trial_{n:04d}"] for n in (1, 2, 3)]
    d = "safety"
    keys = sorted(items["ref_dpo"][d])
    per_item = np.array([np.mean([m[d][i] for m in merges]) - 0.5 * (items["ref_dpo"][d][i] + items["ref_kto"][d][i])
                         for i in keys])
    ci = study_tables.lambda_mean_diff(merges, items["ref_dpo"], items["ref_kto"], d, 300, seed=7)
    want = bootstrap_mean(per_item, n_resamples=300, seed=7)
    assert (ci.estimate, ci.low, ci.high, ci.n_items) == pytest.approx((want.estimate, want.low, want.high, N_ITEMS))
    # one merge: the single-merge interval is the same rule
    single = study_tables.lambda_mean_diff(merges[:1], items["ref_dpo"], items["ref_kto"], d, 300)
    assert study_tables.mean_diff_interval(merges[0], items["ref_dpo"], items["ref_kto"], d, 300) == (
        single.low, single.high)
    empty = study_tables.lambda_mean_diff([], items["ref_dpo"], items["ref_kto"], d, 300)
    assert empty.n_items == 0 and math.isnan(empty.estimate) and math.isnan(empty.low)


def test_table1_without_items_keeps_the_rows_value_and_prints_no_interval():
    soups, references, items = _study(seed=3)
    table = meandiff_table(soups, references, {}, n_boot=100)
    row = table.iloc[0]
    for d in DIMENSIONS:
        assert row[d] == pytest.approx(_hand_value(items, d))
        assert math.isnan(row[f"{d}_low"]) and math.isnan(row[f"{d}_high"]) and row[f"{d}_items"] == 0
    assert "[" not in markdown(table, ["method", *DIMENSIONS], intervals=True)
