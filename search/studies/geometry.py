"""Study output: the alignment-vector geometry of a model family, as in Figure 1 of the paper.

    alignment_norms.csv     layer, group, model, l2, n_params      (layer empty: non-layer / "all")
    alignment_angles.csv    layer, group, a, b, cosine, degrees    (NaN where a vector is zero)
    alignment_geometry.html interactive figure (plotly, loads plotly.js from the CDN)
    alignment_geometry.png  the same figure, static (matplotlib, Agg)

Figure layout (Figure 1 of Motyka et al.): top row the L2 norm of each variant's alignment
vector, bottom row the angle between each pair's; one column per layer group (attention,
MLP, norms) with the layer index on x, and a last column for the tensors outside the
blocks (embeddings, final norm, head), which have no layer index. Nearly orthogonal
alignment vectors (angles near the dashed 90° line) are the paper's finding for models
trained with different preference methods; they are why SLERP and LERP merges differ.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from merging.checkpoint import ModelFolder
from merging.geometry import WHOLE_MODEL, Geometry, alignment_geometry

NORMS_CSV = "alignment_norms.csv"
ANGLES_CSV = "alignment_angles.csv"
FIGURE_HTML = "alignment_geometry.html"
FIGURE_PNG = "alignment_geometry.png"
LAYER_GROUPS: tuple[tuple[str, str], ...] = (("attn", "attention"), ("mlp", "MLP"), ("norm", "norms"))
OUTSIDE_TITLE = "embeddings / final norm / head"
# Input side to output side: embeddings, final norm, head.
_OUTSIDE_RANK = {"embed": 0, "norm": 1, "lm_head": 2}
# 18 distinguishable colours (tab10 order, then tab20's light tones): a family of 6 variants has
# 15 pairs, and a repeated colour makes two angle curves look like one.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22", "#aec7e8", "#ff9896", "#98df8a", "#c5b0d5", "#ffbb78", "#c49c94", "#f7b6d2", "#9edae5")


def write_geometry(models: dict[str, str], base_key: str, out_dir: Path) -> dict[str, Path]:
    """Measure the family `models` (key -> folder) against `models[base_key]` and write the
    CSVs and figures into `out_dir`; returns {"norms_csv", "angles_csv", "html", "png"} -> path."""
    if base_key not in models:
        raise KeyError(f"base {base_key!r} is not one of the models {sorted(models)}")
    with ExitStack() as stack:
        folders = {k: stack.enter_context(ModelFolder(p, label=k)) for k, p in models.items()}
        base = folders.pop(base_key)
        geometry = alignment_geometry(base, folders)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    norms, angles = norms_frame(geometry), angles_frame(geometry)
    paths = {"norms_csv": out_dir / NORMS_CSV, "angles_csv": out_dir / ANGLES_CSV,
             "html": out_dir / FIGURE_HTML, "png": out_dir / FIGURE_PNG}
    norms.to_csv(paths["norms_csv"], index=False)
    angles.to_csv(paths["angles_csv"], index=False)
    write_html(norms, angles, paths["html"])
    write_png(norms, angles, paths["png"])
    return paths


def norms_frame(geometry: Geometry) -> pd.DataFrame:
    """Norm rows as a table; layer is a nullable integer so the CSV shows 3, not 3.0."""
    return _frame([asdict(r) for r in geometry.norms], ["layer", "group", "model", "l2", "n_params"])


def angles_frame(geometry: Geometry) -> pd.DataFrame:
    return _frame([asdict(r) for r in geometry.angles], ["layer", "group", "a", "b", "cosine", "degrees"])


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=columns)
    table["layer"] = table["layer"].astype("Int64")
    return table


def _series(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One line per model (norms) or per pair (angles), in first-appearance order."""
    label = table["model"] if "model" in table else table["a"] + " vs " + table["b"]
    return [(name, table[label == name]) for name in dict.fromkeys(label)]


def _panels(table: pd.DataFrame, value: str) -> list[tuple[str, str, list[tuple[str, list, list]]]]:
    """(column title, x kind, [(line label, xs, ys)]) per figure column: the layer groups,
    then the non-layer tensors on a categorical axis. Shared by both renderers."""
    in_layers = table[table["layer"].notna()]
    outside = table[table["layer"].isna() & (table["group"] != WHOLE_MODEL)]
    outside = outside.sort_values("group", key=lambda g: g.map(_OUTSIDE_RANK), kind="stable")
    outside_x = outside["group"].map(lambda g: "final norm" if g == "norm" else g)
    panels = []
    for group, title in LAYER_GROUPS:
        rows = in_layers[in_layers["group"] == group].sort_values("layer", kind="stable")
        panels.append((title, "layer", [(name, [int(x) for x in part["layer"]], list(part[value]))
                                        for name, part in _series(rows)]))
    panels.append((OUTSIDE_TITLE, "tensor", [(name, list(outside_x[part.index]), list(part[value]))
                                             for name, part in _series(outside)]))
    return panels


def _rows(norms: pd.DataFrame, angles: pd.DataFrame) -> list[tuple[str, list]]:
    return [("L2 norm of θ_i − θ_base", _panels(norms, "l2")), ("angle (degrees)", _panels(angles, "degrees"))]


def write_html(norms: pd.DataFrame, angles: pd.DataFrame, path: Path) -> Path:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = _rows(norms, angles)
    titles = [title for _, panels in rows for title, _, _ in panels]
    fig = make_subplots(rows=2, cols=len(rows[0][1]), subplot_titles=titles, horizontal_spacing=0.05,
                        vertical_spacing=0.12)
    for r, (y_title, panels) in enumerate(rows, start=1):
        colours = _colours(panels)
        for c, (_, x_kind, lines) in enumerate(panels, start=1):
            for name, xs, ys in lines:
                fig.add_trace(go.Scatter(x=xs, y=ys, name=name, legendgroup=name, showlegend=c == 1,
                                         mode="lines+markers" if x_kind == "layer" else "markers",
                                         line={"color": colours[name]}), row=r, col=c)
            fig.update_xaxes(title_text=x_kind, row=r, col=c, **({"tickformat": "d"} if x_kind == "layer" else {}))
            if r == 2:
                fig.add_hline(y=90, line_dash="dash", line_color="grey", row=r, col=c)
        fig.update_yaxes(title_text=y_title, row=r, col=1)
    fig.update_layout(title="Alignment vectors θ_i − θ_base: norms (top) and pairwise angles (bottom)",
                      height=750, width=1500, template="plotly_white")
    fig.write_html(path, include_plotlyjs="cdn")
    return path


def write_png(norms: pd.DataFrame, angles: pd.DataFrame, path: Path) -> Path:
    # Figure + the Agg canvas directly: no pyplot, so no global backend switch and no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = _rows(norms, angles)
    fig = Figure(figsize=(18, 8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(rows[0][1]), squeeze=False)
    for r, (y_title, panels) in enumerate(rows):
        colours = _colours(panels)
        for c, (title, x_kind, lines) in enumerate(panels):
            ax = axes[r][c]
            for name, xs, ys in lines:
                ax.plot(xs, ys, marker="o", markersize=3, linestyle="-" if x_kind == "layer" else "none",
                        color=colours[name], label=name)
            if r == 1:
                ax.axhline(90, color="grey", linestyle="--", linewidth=0.8)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(x_kind)
            if x_kind == "layer":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[r][0].set_ylabel(y_title)
        if any(lines for _, _, lines in panels):
            axes[r][0].legend(fontsize=8)
    fig.suptitle("Alignment vectors θ_i − θ_base: norms (top) and pairwise angles (bottom)")
    fig.savefig(path, dpi=110)
    return path


def _colours(panels: list) -> dict[str, str]:
    names = dict.fromkeys(name for _, _, lines in panels for name, _, _ in lines)
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def whole_model_summary(norms: pd.DataFrame, angles: pd.DataFrame) -> str:
    """One line per model and pair: the whole-model numbers, for logs and reports."""
    lines = [f"||d_{r.model}|| = {r.l2:.4g}" for r in norms[norms["group"] == WHOLE_MODEL].itertuples()]
    lines += [f"∠({r.a}, {r.b}) = {r.degrees:.2f}°" + (" (zero vector)" if math.isnan(r.degrees) else "")
              for r in angles[angles["group"] == WHOLE_MODEL].itertuples()]
    return "\n".join(lines)
