"""A study's outputs in `EXP_DIR/study/`: CSV + Markdown tables, PNG + HTML figures, REPORT.md.

REPORT.md states what the numbers rest on (model family, judge, eval set, number of
items, bootstrap intervals) so nobody mistakes noise for a finding: with a few dozen
items a WTR difference of 0.1 is often inside its interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from search.config import DIMENSIONS, SearchConfig
from search.results import read_items, read_references
from search.studies.tables import (
    league_table, markdown, meandiff_table, lambda_sweep, soup_rows, wtr_interval, wtr_table,
)

LINE_STYLES = {"lerp": "-", "slerp": ":", "slerp_lerp_norms": "--"}


def judge_description(config: SearchConfig) -> str:
    judge = config.judging.judge
    if judge.backend == "rubric":
        return "rubric (the offline, reference-based heuristic judge; not an LLM)"
    return f"{judge.backend}: {judge.model}" + (f" at {judge.base_url}" if judge.backend == "openai" else "")


def _items(exp_dir: Path, keys: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    return {k: read_items(exp_dir, k) or {} for k in keys}


def _with_intervals(frame: pd.DataFrame, keys: Sequence[str], items: Mapping[str, Any], n: int) -> pd.DataFrame:
    """`<dim>_low` / `<dim>_high` of each row's WTR; `keys[i]` names row i's items ("" for none)."""
    for d in DIMENSIONS:
        bounds = [wtr_interval(items.get(k, {}), d, n) if k else (math.nan, math.nan) for k in keys]
        frame[f"{d}_low"], frame[f"{d}_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    return frame


def _write(path: Path, text: str) -> str:
    """Write a table's Markdown and hand it back, so REPORT.md embeds it without reading it again."""
    path.write_text(text)
    return text


def _write_report(out: Path, lines: Sequence[str]) -> Path:
    report = out / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _n_items(items: Mapping[str, Mapping[str, Mapping[str, float]]]) -> int:
    return max((len(set().union(*(set(v) for v in by_dim.values()))) for by_dim in items.values() if by_dim),
               default=0)


def family_description(config: SearchConfig, sources: Sequence[str]) -> str:
    base = "the example family's SmolLM2-135M-Instruct" if config.models.example else f"`{config.models.base}`"
    return f"base {base}; sources " + ", ".join(f"`{s}`" for s in sources)


def _header(config: SearchConfig, models: Iterable[str], items: Mapping[str, Mapping[str, Mapping[str, float]]],
            wall_s: float, title: str) -> list[str]:
    """REPORT.md's title and what its numbers rest on: `models` are the family's keys (base
    included), `items` the per-item outcomes the tables were computed from."""
    return [
        f"# {title}", "",
        f"- **Experiment:** `{config.experiment.name}`, wall time {wall_s / 60:.1f} min",
        f"- **Models:** {family_description(config, [k for k in models if k != 'base'])}",
        f"- **Judge:** {judge_description(config)}",
        f"- **Eval set:** `{config.eval.set}`" + (f" (stratified subset of {config.eval.subset})"
                                                  if config.eval.subset else "") + f", {_n_items(items)} items judged",
        f"- **Generation:** greedy, at most {config.serving.generation.max_tokens} new tokens",
        f"- **Intervals:** 95 % percentile bootstrap over eval items ({config.study.bootstrap} resamples). "
        "Greedy decoding and deterministic merges leave the items as the only source of variance, "
        "so an interval that contains 0 is not a finding.", "",
    ]


def _figure_sweep(sweep: pd.DataFrame, png: Path, html: Path) -> None:
    """Figure 2 layout: one panel per dimension, λ on x, WTR on y, the sources at the ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    dims = [d for d in DIMENSIONS if d in set(sweep.dimension)]
    cols = 4
    rows = math.ceil(len(dims) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    pfig = make_subplots(rows=rows, cols=cols, subplot_titles=dims)
    curves = list(sweep.groupby(["method", "kind", "pair"], sort=False))
    for k, dim in enumerate(dims):
        ax = axes[k // cols][k % cols]
        for (method, kind, pair), group in curves:
            g = group[group.dimension == dim].sort_values("lambda")
            label = f"{method} {pair}" + (" (homo)" if kind == "homogeneous" else "")
            ax.plot(g["lambda"], g["wtr"], LINE_STYLES.get(method, "-"), marker="o", label=label, alpha=0.8)
            pfig.add_trace(go.Scatter(x=g["lambda"], y=g["wtr"], mode="lines+markers", name=label,
                                      legendgroup=label, showlegend=k == 0), row=k // cols + 1, col=k % cols + 1)
        ax.set_title(dim)
        ax.set_xlabel("λ (share of the second model)")
        ax.set_ylabel("WTR")
        ax.set_ylim(-0.05, 1.05)
    for k in range(len(dims), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    pfig.update_layout(title="WTR against λ (sources at λ = 0 and 1)", height=320 * rows)
    pfig.write_html(html, include_plotlyjs="cdn")


def write_soups_report(config: SearchConfig, exp_dir: Path, models: Mapping[str, str], wall_s: float) -> Path:
    out = exp_dir / "study"
    out.mkdir(exist_ok=True)
    trials = pd.read_parquet(exp_dir / "trials.parquet")
    references = read_references(exp_dir)
    soups = soup_rows(trials)
    row_keys = [f"ref_{k}" for k in references] + [f"trial_{int(n):04d}" for n in soups.get("trial_number", [])]
    items = _items(exp_dir, row_keys)

    wtr = _with_intervals(wtr_table(soups, references), row_keys, items, config.study.bootstrap)
    table1 = meandiff_table(soups, references, items, n_boot=config.study.bootstrap)
    sweep = lambda_sweep(soups, references)
    wtr.to_csv(out / "wtr.csv", index=False)
    table1.to_csv(out / "table1_meandiff.csv", index=False)
    sweep.to_csv(out / "lambda_sweep.csv", index=False)
    wtr_md = _write(out / "wtr.md", markdown(wtr, ["model", *DIMENSIONS, "average"]))
    table1_md = _write(out / "table1_meandiff.md", markdown(table1, ["method", "kind", "pair", *DIMENSIONS, "average"],
                                                            intervals=True) if not table1.empty else "")
    _figure_sweep(sweep, out / "lambda_sweep.png", out / "lambda_sweep.html")
    geometry = _geometry(models, out)

    failed = soups[soups.status != "ok"] if not soups.empty else soups
    lines = _header(config, models, items, wall_s, "Heterogeneous model soups: study report") + [
        f"{len(soups)} merges: {', '.join(config.study.soup_methods)} of "
        f"{soups[soups.kind == 'heterogeneous'].pair.nunique()} heterogeneous pairs at λ ∈ "
        f"{config.study.lambdas} and {soups[soups.kind == 'homogeneous'].pair.nunique()} homogeneous pairs at "
        f"λ ∈ {config.study.homogeneous_lambdas} (λ is the share of the second model; slerp = SLERP of "
        "alignment vectors on all parameters, slerp_lerp_norms = with normalization layers LERP'd)."
        + (f" {len(failed)} merges failed: see trials.csv." if len(failed) else ""), "",
        "## Table 1: WTR mean-diff (merge − mean of its two sources)", "",
        "Averaged over the row's λ values, on the eval items all of the row's merges and both sources "
        "were scored on; the interval is the bootstrap of that same λ-averaged value, resampling those items "
        "jointly for every merge and both sources.", "",
        table1_md, "",
        "## WTR of every model", "", wtr_md, "",
        "## Figures", "",
        "- λ sweeps per dimension (Figure 2 layout): `lambda_sweep.png`, `lambda_sweep.html`",
        *[f"- {text}: `{path.name}`" for text, path in geometry.items()], "",
        "Files: `wtr.csv`, `table1_meandiff.csv` (with `_low`/`_high` interval columns and `_items`, the "
        "number of items each value rests on), `lambda_sweep.csv`; "
        "per-merge rows in `../trials.parquet`, per-item outcomes in `../items/`.",
    ]
    return _write_report(out, lines)


def _geometry(models: Mapping[str, str], out: Path) -> dict[str, Path]:
    """Figure 1: norms of the alignment vectors and angles between them, per layer group."""
    from search.studies.geometry import write_geometry

    paths = write_geometry(dict(models), "base", out)
    return {f"alignment-vector geometry (Figure 1 layout), {name}": path for name, path in paths.items()}


def write_methods_report(config: SearchConfig, exp_dir: Path, points: Sequence[Mapping[str, Any]],
                         wall_s: float) -> Path:
    out = exp_dir / "study"
    out.mkdir(exist_ok=True)
    trials = pd.read_parquet(exp_dir / "trials.parquet")
    references = read_references(exp_dir)
    pareto = pd.read_csv(exp_dir / "pareto.csv")
    front = set(pareto.trial_number.astype(int)) if "trial_number" in pareto else set()
    defaults = {p["method"]: p for p in points}
    league = league_table(trials, defaults, front)
    keys = [f"trial_{b:04d}" if b >= 0 else "" for b in league.best_trial]
    items = _items(exp_dir, [k for k in keys if k])
    league = _with_intervals(league, keys, items, config.study.bootstrap)
    league.to_csv(out / "league.csv", index=False)
    cols = ["rank", "method", *DIMENSIONS, "average", "default_average", "on_front", "best_trial", "trials"]
    league_md = _write(out / "league.md", markdown(league, cols))
    refs = wtr_table(pd.DataFrame(), references)
    lines = _header(config, references, items, wall_s, "Merge-method league: study report") + [
        f"{len(defaults)} methods, each at its defaults (equal weights, task-vector scale 1, density 0.5, "
        f"seed 0) and then {config.study.search_budget} trials searched by {config.search.sampler} over all of "
        f"them: {len(trials)} trials in all. Each row is the method's best trial by the average WTR over the "
        "seven dimensions; `on_front`: one of its trials is on the Pareto front of "
        f"{', '.join(config.search.objectives)}.", "",
        league_md, "",
        "Reference models under the same judge:", "", markdown(refs, ["model", *DIMENSIONS, "average"]), "",
        "Files: `league.csv` (with `_low`/`_high` interval columns of the best trial), `../trials.parquet`, "
        "`../pareto.csv`, `../pareto.html`.",
    ]
    return _write_report(out, lines)
