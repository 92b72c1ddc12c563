"""Trials, references and the front as one line per record, `name=value`, for logs that are not
terminals.

The Ray dashboard's job log view (where a submitted run's output shows) collapses runs of
spaces, so the columns of the front table (`report.front_table`) no longer line up there and a
value cannot be told from its neighbour's. A line that names each value reads the same in any
viewer and greps (`grep '^trial 7 '`). The names are those of trials.csv and pareto.csv
(`safety`, `holdout.safety`, `trial_s`, `dominated_by`); every score keeps its 95 % interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from search.report import HOLDOUT, as_float, has_holdout, score_cell


def score_fields(row: Mapping[str, Any], objectives: Sequence[str]) -> list[str]:
    """`safety=0.812 [0.70, 0.90]` per objective, then `holdout.safety=…` per objective where the
    row was validated on the held-out items."""
    fields = [f"{o}={score_cell(row, o)}" for o in objectives]
    if has_holdout(row, objectives):
        fields += [f"{HOLDOUT}{o}={score_cell(row, o, HOLDOUT)}" for o in objectives]
    return fields


def trial_line(row: Mapping[str, Any], objectives: Sequence[str]) -> str:
    """A finished trial: `trial 7 ok method=task_arithmetic safety=0.812 [0.70, 0.90] … trial_s=17.2`;
    a trial that did not finish ok ends with the first line of its error instead of scores."""
    status = str(row.get("status") or "failed")
    fields = [f"trial {row['trial_number']} {status}", f"method={row.get('method')}"]
    if status in ("ok", "pruned"):  # a pruned trial: its round-1 scores, and which front trial beat them
        fields += score_fields(row, objectives)
    if status == "pruned":
        fields.append(f"items={row.get('items_judged')} pruned_by={row.get('pruned_by')}")
    seconds = as_float(row.get("trial_s"))
    if not math.isnan(seconds):
        fields.append(f"trial_s={seconds:.1f}")
    error = str(row.get("error") or "").strip()
    if status != "ok" and error:
        fields.append(f"error={error.splitlines()[0][:300]}")
    return " ".join(fields)


def reference_line(name: str, reference: Mapping[str, Any], objectives: Sequence[str]) -> str:
    """`reference base safety=0.778 [0.64, 0.92] …`: a base or source model's scores."""
    return " ".join([f"reference {name}", *score_fields(reference, objectives)])


def front_lines(rows: Sequence[Mapping[str, Any]], front: Sequence[int], references: Mapping[str, Mapping[str, Any]],
                objectives: Sequence[str], title: str, beaten_by: Mapping[int, Sequence[str]] | None = None) -> list[str]:
    """What `report.front_table` shows, a line per record: the title, each reference, then each
    front trial (`front trial 0 method=… dominated_by=orpo` where a reference beats it)."""
    lines = [title, *[reference_line(name, ref, objectives) for name, ref in references.items()]]
    for i in sorted(front, key=lambda i: rows[i]["trial_number"]):
        fields = [f"front trial {rows[i]['trial_number']}", f"method={rows[i].get('method')}",
                  *score_fields(rows[i], objectives)]
        beaten = (beaten_by or {}).get(i, ())
        if beaten:
            fields.append(f"dominated_by={','.join(beaten)}")
        lines.append(" ".join(fields))
    return lines


def front_summary(rows: Sequence[Mapping[str, Any]], front: Sequence[int], title: str) -> str:
    """`Pareto front after 6 trials (search items): trial 0 task_arithmetic, trial 2 dare_ties`:
    the front between trials, in a log. Each trial's scores are in its own line already and the
    references' at the start, so a log repeats neither after every trial; the whole front prints
    as lines once, at the end."""
    members = [f"trial {rows[i]['trial_number']} {rows[i].get('method')}"
               for i in sorted(front, key=lambda i: rows[i]["trial_number"])]
    return f"{title}: {', '.join(members) or 'empty'}"
