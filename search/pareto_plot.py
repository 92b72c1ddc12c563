"""pareto.html's figure: every trial and every reference model on each pair of objectives.

Read in a browser as often as the tables, so it is laid out for people: the references are
drawn first, under the trials, so a trial that scores exactly like a source still shows; the
names of references that sit on the same point share one label ("dpo, orpo") instead of being
printed over each other; each axis is padded beyond its data (and more above, where the labels
go), so no marker or label is cut at the plot's edge or runs into the subplot's title; every
axis is named after its objective, and hovering a point names the trial, its method and both
scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

from search.constraints import score_of

COLUMNS = 3  # subplots per row
ROW_HEIGHT = 380  # pixels per row of subplots


def pareto_figure(rows: Sequence[Mapping[str, Any]], front: Sequence[int], references: Mapping[str, Mapping[str, Any]],
                  objectives: Sequence[str], title: str):
    """A plotly Figure: one subplot per pair of objectives; references (×, labelled), trials off
    the front (blue) and front trials (red diamonds), one legend for all subplots."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = list(combinations(objectives, 2)) or [(objectives[0], objectives[0])]
    cols = min(COLUMNS, len(pairs))
    n_rows = math.ceil(len(pairs) / cols)
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=[f"{y} vs {x}" for x, y in pairs],
                        vertical_spacing=min(0.3, 0.45 / n_rows) if n_rows > 1 else 0.3)
    ok = [i for i, r in enumerate(rows) if r.get("status") == "ok"]
    off_front = [i for i in ok if i not in set(front)]
    names = list(references)
    for k, (x, y) in enumerate(pairs):
        r, c = k // cols + 1, k % cols + 1
        ref_x = [score_of(references[n], x) for n in names]
        ref_y = [score_of(references[n], y) for n in names]
        x_range = padded_range([rows[i].get(x) for i in ok] + ref_x, 0.08, 0.08)
        fig.add_trace(go.Scatter(
            x=ref_x, y=ref_y, mode="markers+text", name="reference models", legendgroup="ref", showlegend=k == 0,
            text=shared_labels(names, ref_x, ref_y), textposition=label_positions(ref_x, x_range), cliponaxis=False,
            customdata=names, hovertemplate=f"%{{customdata}}<br>{x}=%{{x:.3f}}<br>{y}=%{{y:.3f}}<extra></extra>",
            marker={"color": "black", "symbol": "x-thin", "size": 14, "line": {"width": 2.5, "color": "black"}}),
            row=r, col=c)
        for label, idx, color, symbol in (("trials", off_front, "#7fa6cf", "circle"),
                                          ("Pareto front", sorted(front), "#d62728", "diamond")):
            fig.add_trace(go.Scatter(
                x=[rows[i].get(x) for i in idx], y=[rows[i].get(y) for i in idx], mode="markers", name=label,
                legendgroup=label, showlegend=k == 0, cliponaxis=False, opacity=0.85,
                marker={"color": color, "symbol": symbol, "size": 9},
                customdata=[f"trial {rows[i]['trial_number']}: {rows[i].get('method')}" for i in idx],
                hovertemplate=f"%{{customdata}}<br>{x}=%{{x:.3f}}<br>{y}=%{{y:.3f}}<extra></extra>"), row=r, col=c)
        fig.update_xaxes(title_text=x, range=x_range, row=r, col=c)
        fig.update_yaxes(title_text=y, range=padded_range([rows[i].get(y) for i in ok] + ref_y, 0.08, 0.16),
                         row=r, col=c)
    fig.update_layout(title=title, height=ROW_HEIGHT * n_rows, legend={"itemsizing": "constant"})
    return fig


def shared_labels(names: Sequence[str], xs: Sequence[float], ys: Sequence[float]) -> list[str]:
    """One label per point: the first reference at a spot carries every name there ("dpo, orpo"),
    the others none, so coinciding references do not print their names over each other."""
    at: dict[tuple[float, float], list[int]] = {}
    for i, (x, y) in enumerate(zip(xs, ys)):
        at.setdefault((round(x, 9), round(y, 9)) if math.isfinite(x) and math.isfinite(y) else (i, math.nan), []
                      ).append(i)
    labels = [""] * len(names)
    for members in at.values():
        labels[members[0]] = ", ".join(names[i] for i in members)
    return labels


def label_positions(xs: Sequence[float], x_range: Sequence[float] | None) -> list[str]:
    """Where each reference's label goes: above its marker, leaning inwards in the outer quarters
    of the axis, so a long shared label at an edge runs into the plot, not over the tick labels."""
    if not x_range:
        return ["top center"] * len(xs)
    low, high = x_range
    where = [(x - low) / (high - low) if math.isfinite(x) else 0.5 for x in xs]
    return ["top right" if w < 0.25 else "top left" if w > 0.75 else "top center" for w in where]


def padded_range(values: Sequence[Any], below: float, above: float) -> list[float] | None:
    """[min, max] of the finite values widened by `below` / `above` of their span; an objective on
    which every point scores the same gets the span of its magnitude (at least 1), so its axis
    does not pretend to a precision of thousandths; None (plotly's autorange) without values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    span = (high - low) or max(abs(high), 1.0)
    return [low - below * span, high + above * span]
