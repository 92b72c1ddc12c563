"""The studies' tables from result rows and per-item indicators (pure pandas/numpy, no I/O).

Every number here is recomputed from what the search already wrote: trials.parquet rows,
references.csv, and items/*.parquet (one 0/1 win-or-tie per item and dimension). So a
table can be rebuilt from an experiment folder at any time, and every interval is the
percentile bootstrap over eval items of the very value printed beside it (same models, same
items, same statistic): the items are the only source of variance left when generation is
greedy and merges are deterministic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from judges import ConfidenceInterval, bootstrap_mean
from search.config import DIMENSIONS

Items = Mapping[str, Mapping[str, float]]  # dimension -> item_id -> 0/1


@dataclass(frozen=True)
class SoupPoint:
    """One merge of the soups study: `method` of pair (m1, m2) at λ (share of m2)."""

    kind: str  # "heterogeneous" | "homogeneous"
    m1: str
    m2: str
    method: str  # lerp | slerp | slerp_lerp_norms
    lam: float

    @property
    def pair(self) -> str:
        return f"{self.m1}+{self.m2}"

    def params(self) -> dict[str, object]:
        return {"study": "soups", "kind": self.kind, "pair": self.pair, "soup_method": self.method,
                "lambda": self.lam}


def wtr_interval(items: Items, dim: str, n: int, seed: int = 0) -> tuple[float, float]:
    ci = bootstrap_mean(np.array(list(items.get(dim, {}).values())), n_resamples=n, seed=seed)
    return ci.low, ci.high


def lambda_mean_diff(merges: Sequence[Items], m1: Items, m2: Items, dim: str, n: int,
                     seed: int = 0) -> ConfidenceInterval:
    """Mean over `merges` of [WTR(merge) − ½(WTR(m1) + WTR(m2))], with its percentile bootstrap interval.

    On the items every merge and both sources were scored on, the λ-average of the mean-diffs
    is itself a mean over items of d_i = mean_λ(merge_λ,i) − ½(m1_i + m2_i); so resampling
    those items jointly for all merges and both sources is `bootstrap_mean` over d_i, and the
    estimate it returns is the value its interval belongs to. No item in common (or no
    merge): NaN estimate and interval, `n_items` 0."""
    scored = [m.get(dim, {}) for m in merges]
    b, c = m1.get(dim, {}), m2.get(dim, {})
    common = sorted(set(b).intersection(c, *scored)) if scored else []
    d = np.array([sum(m[i] for m in scored) / len(scored) - 0.5 * (b[i] + c[i]) for i in common])
    return bootstrap_mean(d, n_resamples=n, seed=seed)


def mean_diff_interval(merge: Items, m1: Items, m2: Items, dim: str, n: int, seed: int = 0) -> tuple[float, float]:
    """CI of WTR(merge) − ½(WTR(m1) + WTR(m2)), resampling the items all three were scored on."""
    ci = lambda_mean_diff([merge], m1, m2, dim, n, seed)
    return ci.low, ci.high


def _avg(values: Sequence[float]) -> float:
    finite = [v for v in values if isinstance(v, float | int) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def soup_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """The soups study's ok rows with their point (kind, pair, method, λ) unpacked from `params`."""
    records = []
    for row in trials.to_dict("records"):
        params = json.loads(row.get("params") or "{}")
        if params.get("study") != "soups":
            continue
        m1, m2 = params["pair"].split("+")
        records.append(row | {"kind": params["kind"], "pair": params["pair"], "m1": m1, "m2": m2,
                              "soup_method": params["soup_method"], "lambda": float(params["lambda"])})
    return pd.DataFrame(records)


def wtr_table(soups: pd.DataFrame, references: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """WTR per dimension (and their average) for every reference model and every merge."""
    rows = []
    for model, ref in references.items():
        values = {d: ref.get(f"wtr.{d}", math.nan) for d in DIMENSIONS}
        rows.append({"model": model, "kind": "source" if model != "base" else "base", "pair": "", "method": "",
                     "lambda": math.nan, **values, "average": _avg(list(values.values()))})
    for r in soups.to_dict("records"):
        values = {d: r.get(f"wtr.{d}", math.nan) for d in DIMENSIONS}
        rows.append({"model": f"{r['soup_method']} {r['pair']} λ={r['lambda']:g}", "kind": r["kind"],
                     "pair": r["pair"], "method": r["soup_method"], "lambda": r["lambda"], "status": r["status"],
                     **values, "average": _avg(list(values.values()))})
    return pd.DataFrame(rows)


def meandiff_table(soups: pd.DataFrame, references: Mapping[str, Mapping[str, float]],
                   items: Mapping[str, Items], *, n_boot: int = 1000) -> pd.DataFrame:
    """The heterogeneous-soups paper's Table 1: rows method × kind × pair, columns the seven
    dimensions and their average, each WTR_mean-diff = WTR(merge) − ½(WTR(m1) + WTR(m2)),
    averaged over the λ values the row was run at (λ = 0 and 1 are the sources
    themselves and are left out).

    `items` maps "trial_NNNN"/"ref_MODEL" to indicators. A dimension's value and its
    interval (`<dim>_low`, `<dim>_high`) are one statistic: the λ-averaged mean-diff on the
    items that all of the row's merges and both sources were scored on, and its 95 %
    percentile bootstrap resampling those items jointly (`lambda_mean_diff`; `<dim>_items`
    says how many items). Where there are none (no items files, or no item in common), the
    value is computed from the WTRs in trials.parquet and references.csv, with no interval."""
    if soups.empty:
        return pd.DataFrame()
    ok = soups[(soups.status == "ok") & (soups["lambda"] > 0) & (soups["lambda"] < 1)]
    out = []
    for (method, kind, pair), group in ok.groupby(["soup_method", "kind", "pair"], sort=False):
        m1, m2 = pair.split("+")
        row: dict[str, object] = {"method": method, "kind": kind, "pair": pair, "lambdas": len(group)}
        merges = [items.get(f"trial_{int(t):04d}", {}) for t in group.trial_number]
        for d in DIMENSIONS:
            ci = lambda_mean_diff(merges, items.get(f"ref_{m1}", {}), items.get(f"ref_{m2}", {}), d, n_boot)
            if not ci.n_items:  # no items to rest an interval on: the rows' WTRs, no interval
                base = 0.5 * (references[m1][f"wtr.{d}"] + references[m2][f"wtr.{d}"])
                ci = replace(ci, estimate=float((group[f"wtr.{d}"] - base).mean()))
            row[d], row[f"{d}_low"], row[f"{d}_high"], row[f"{d}_items"] = ci.estimate, ci.low, ci.high, ci.n_items
        row["average"] = _avg([row[d] for d in DIMENSIONS])
        out.append(row)
    order = {"heterogeneous": 0, "homogeneous": 1}
    frame = pd.DataFrame(out)
    return frame.sort_values(["method", "kind", "pair"], key=lambda c: c.map(order) if c.name == "kind" else c,
                             kind="stable").reset_index(drop=True)


def lambda_sweep(soups: pd.DataFrame, references: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Long table for the Figure 2 layout: per (method, pair) WTR against λ, with the two
    sources at λ = 0 (m1) and λ = 1 (m2) as the curve's ends."""
    rows = []
    for (method, kind, pair), group in soups.groupby(["soup_method", "kind", "pair"], sort=False):
        m1, m2 = pair.split("+")
        for d in DIMENSIONS:
            ends = {0.0: references[m1][f"wtr.{d}"], 1.0: references[m2][f"wtr.{d}"]}
            points = {lam: ("source", v) for lam, v in ends.items()}
            for r in group[group.status == "ok"].to_dict("records"):
                points[float(r["lambda"])] = ("merge", r[f"wtr.{d}"])
            rows += [{"method": method, "kind": kind, "pair": pair, "dimension": d, "lambda": lam, "wtr": v,
                      "point": what} for lam, (what, v) in sorted(points.items())]
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame, columns: Sequence[str], *, intervals: bool = False, digits: int = 3) -> str:
    """A GitHub Markdown table; with `intervals`, cells read `+0.031 [−0.06, +0.12]`."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    lines = []
    for r in frame.to_dict("records"):
        cells = []
        for c in columns:
            v = r.get(c, "")
            if isinstance(v, float):
                text = "–" if math.isnan(v) else f"{v:+.{digits}f}" if intervals else f"{v:.{digits}f}"
                lo, hi = r.get(f"{c}_low"), r.get(f"{c}_high")
                if intervals and isinstance(lo, float) and not math.isnan(lo):
                    text += f" [{lo:+.2f}, {hi:+.2f}]"
                cells.append(text)
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def league_table(trials: pd.DataFrame, defaults: Mapping[str, Mapping[str, object]], front: set[int]) -> pd.DataFrame:
    """The 3H benchmark's Table 3 layout: per method, its best trial (by the average WTR
    over the seven dimensions) with per-dimension WTR, the average, the rank, the average
    at its defaults, and whether any of its trials is on the search's Pareto front. A
    method whose trials all failed is listed last with the reason."""
    rows = []
    for method in defaults:
        mine = trials[trials.method == method]
        ok = mine[mine.status == "ok"]
        row: dict[str, object] = {"method": method, "trials": len(mine), "ok": len(ok)}
        default = [r for r in ok.to_dict("records") if json.loads(r.get("params") or "{}") == dict(defaults[method])]
        row["default_average"] = _avg([default[0].get(f"wtr.{d}", math.nan) for d in DIMENSIONS]) if default \
            else math.nan
        if ok.empty:
            errors = mine.error.dropna().tolist() if "error" in mine else []
            row |= {d: math.nan for d in DIMENSIONS} | {"average": math.nan, "best_trial": -1,
                                                        "on_front": False, "error": errors[0] if errors else ""}
            rows.append(row)
            continue
        averages = ok[[f"wtr.{d}" for d in DIMENSIONS]].mean(axis=1, skipna=True)
        best = ok.loc[averages.idxmax()]
        row |= {d: float(best[f"wtr.{d}"]) for d in DIMENSIONS}
        row |= {"average": float(averages.max()), "best_trial": int(best.trial_number),
                "on_front": bool(set(ok.trial_number.astype(int)) & front), "error": ""}
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["rank"] = frame["average"].rank(ascending=False, method="min", na_option="bottom").astype(int)
    return frame.sort_values(["rank", "method"]).reset_index(drop=True)
