"""Held-out validation: the front is chosen on the search items and checked on items it never saw.

A search that picks its front and reports it on the same items overstates it: with 24
trials on 32 items, the best of them is partly the luckiest. So the eval set is split once
(`eval.holdout`, stratified by category and topic, seeded), the sampler only ever sees the
search items, and after the search every front trial is merged again and answered on the
held-out items (the references answered them when they were scored). Rows gain
`holdout.<objective>` with its interval; `export` picks on those by default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm.auto import tqdm

from search.pool import Context
from search.report import HOLDOUT, has_holdout
from search.results import write_items
from search.scoring import intervals

Evaluate = Callable[[Context, dict[str, Any]], dict[str, Any]]


def holdout_scores(metrics: dict[str, float], per_item: dict[str, dict[str, float]],
                   objectives: Sequence[str]) -> dict[str, float]:
    """`holdout.<objective>` and its interval, from a judged pass over the held-out items."""
    out = {f"{HOLDOUT}{o}": metrics.get(o, math.nan) for o in objectives}
    out |= intervals(per_item, objectives, prefix=HOLDOUT)
    out["holdout_items"] = max((len(per_item.get(o, {})) for o in objectives), default=0)
    return out


def validate_front(ctx: Context, exp_dir: Path, rows: list[dict[str, Any]], front: Sequence[int],
                   evaluate: Evaluate, saved: Callable[[], Any] = lambda: None) -> int:
    """Answer and judge the held-out items with every front trial that has no held-out scores
    yet (a resumed run validates only what is new); returns how many were validated now.

    `evaluate(ctx, plan)` is the search's own trial (merge, swap, generate, judge), so the
    held-out numbers mean exactly what the search numbers mean; `saved()` is called after each
    trial (the driver rewrites the result files), so a crash loses at most the one running."""
    held = ctx.on_holdout()
    todo = [i for i in front if not has_holdout(rows[i], ctx.objectives) and rows[i].get("holdout_status") != "failed"]
    if not held.items or not todo:
        return 0
    for i in tqdm(todo, desc=f"validating the front on {len(held.items)} held-out items", unit="trial"):
        number = int(rows[i]["trial_number"])
        plan = yaml.safe_load((exp_dir / "plans" / f"trial_{number:04d}.yaml").read_text())
        result = evaluate(held, plan)
        if result.get("status") != "ok" or not result.get("items_json"):
            rows[i] |= {"holdout_status": "failed", "holdout_error": str(result.get("error", ""))[:300]}
        else:
            per_item = json.loads(result["items_json"])
            write_items(exp_dir, f"holdout_trial_{number:04d}", per_item)
            rows[i] |= holdout_scores(result, per_item, ctx.objectives) | {"holdout_status": "ok", "holdout_error": ""}
        saved()
    return len(todo)


def write_split(exp_dir: Path, search: Sequence[Any], held_out: Sequence[Any]) -> Path:
    """eval_split.csv: which item the search saw and which it did not (id, category, topic, part)."""
    frame = pd.DataFrame([{"item_id": it.id, "category": it.category, "topic": it.topic, "part": part}
                          for part, items in (("search", search), ("holdout", held_out)) for it in items])
    path = exp_dir / "eval_split.csv"
    frame.to_csv(path, index=False)
    return path
