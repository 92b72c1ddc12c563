"""What a search prints and writes for people: the front table and REPORT.md.

The front table is plain text laid out from its own content, never from the terminal's
width: a driver log is not a TTY (Ray job logs, `| tee`, CI), and rich tables squeezed into
80 columns there cut names to "task_…" and "factu…". Every score is printed with its 95 %
bootstrap interval over items, on the search items and, once the front is validated, on the
held-out items, so a lead of one item reads as what it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search.health import ObjectiveHealth

HOLDOUT = "holdout."


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell, two spaces apart; nothing is ever cut."""
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def score_cell(row: Mapping[str, Any], objective: str, prefix: str = "") -> str:
    """"0.812 [0.69, 0.94]": the value and its interval (one statistic, from the same items)."""
    value = as_float(row.get(prefix + objective))
    if math.isnan(value):
        return "-"
    low, high = as_float(row.get(f"{prefix}{objective}_low")), as_float(row.get(f"{prefix}{objective}_high"))
    return f"{value:.3f}" + ("" if math.isnan(low) else f" [{low:.2f}, {high:.2f}]")


def has_holdout(row: Mapping[str, Any], objectives: Sequence[str]) -> bool:
    return all(not math.isnan(as_float(row.get(HOLDOUT + o))) for o in objectives)


def front_table(rows: Sequence[Mapping[str, Any]], front: Sequence[int], references: Mapping[str, Mapping[str, Any]],
                objectives: Sequence[str], title: str, beaten_by: Mapping[int, Sequence[str]] | None = None) -> str:
    """The references, then the front trials: a line of search scores and, where the trial (or
    reference) was validated, a line of held-out scores under it."""
    header = ["trial", "method", "items", *objectives, "beaten by"]
    body: list[list[str]] = []

    def add(name: str, method: str, row: Mapping[str, Any], beaten: str) -> None:
        body.append([name, method, "search", *[score_cell(row, o) for o in objectives], beaten])
        if has_holdout(row, objectives):
            body.append(["", "", "held-out", *[score_cell(row, o, HOLDOUT) for o in objectives], ""])

    for name, ref in references.items():
        add(name, "reference", ref, "")
    for i in sorted(front, key=lambda i: rows[i]["trial_number"]):
        add(str(rows[i]["trial_number"]), str(rows[i].get("method")), rows[i],
            ", ".join((beaten_by or {}).get(i, ())))
    return f"{title}\n{format_table(header, body)}"


def write_report(exp_dir: Path, *, title: str, summary: Sequence[str], health: Sequence[ObjectiveHealth],
                 table: str, notes: Sequence[str] = ()) -> Path:
    """REPORT.md: what was searched, whether each objective can guide it, the front with its
    search and held-out scores. Rewritten with the result files, so it is never stale."""
    parts = [f"# {title}", "", *[f"- {s}" for s in summary], "", "## Objectives on the reference models", ""]
    parts += [f"- {h.message()}" for h in health] or ["- (references not judged yet)"]
    parts += ["", "## Pareto front", "", "Scores are win-tie rates (or metric means) with 95 % bootstrap intervals "
              "over items; the front is chosen on the search items, the held-out line validates it on items "
              "the search never saw.", "", "```", table, "```"]
    if notes:
        parts += ["", *[f"- {n}" for n in notes]]
    path = exp_dir / "REPORT.md"
    tmp = path.with_name(".REPORT.md.tmp")
    tmp.write_text("\n".join(parts) + "\n")
    tmp.replace(path)
    return path


def as_float(value: Any) -> float:
    """A cell of a result row as a float; NaN for a missing or non-numeric one (a failed trial)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
