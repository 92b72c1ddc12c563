"""The example family's preference set: loading, validation, and one training view per method.

Every row holds one prompt and three answers in different styles — ``terse``, ``proactive``
(answers, then offers a follow-up) and ``cautious`` (hedges, refuses anything that looks
risky). Each preference-optimisation method is trained towards its own style (``SLANTS``),
so the three variants pull in different directions and merges of them visibly trade
conciseness, proactivity and refusals off against each other.

This module is pure data handling (no torch, no TRL) so the loader can be tested fast and
the trainer gets plain lists of dicts. Bad rows are reported all at once with their line
numbers: a typo found before three training runs is much cheaper than one found after.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

__all__ = [
    "DEFAULT_PREFERENCES",
    "KINDS",
    "SLANTS",
    "STYLES",
    "PreferenceRow",
    "PreferenceSet",
    "PreferenceSetError",
    "kto_rows",
    "load_preferences",
    "paired_rows",
]

Style = Literal["terse", "proactive", "cautious"]
STYLES: tuple[Style, ...] = ("terse", "proactive", "cautious")
Kind = Literal["benign", "borderline", "harmful"]
KINDS: tuple[Kind, ...] = ("benign", "borderline", "harmful")
#: The style each method's variant is trained towards (the "chosen"/"desirable" answer).
SLANTS: Mapping[str, Style] = MappingProxyType({"dpo": "terse", "kto": "proactive", "orpo": "cautious"})
DEFAULT_PREFERENCES = Path(__file__).resolve().parent / "data" / "preferences.jsonl"
MAX_REPORTED_ERRORS = 20

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class PreferenceSetError(ValueError):
    """A preference file that cannot be used; the message lists every bad row by line."""


class _Responses(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    terse: _Text
    proactive: _Text
    cautious: _Text


class PreferenceRow(BaseModel):
    """One prompt with an answer in each style; ``kind`` says how risky the prompt looks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: _Text
    kind: Kind
    prompt: _Text
    responses: _Responses

    def response(self, style: Style) -> str:
        return getattr(self.responses, style)


@dataclass(frozen=True)
class PreferenceSet:
    """The validated rows plus the sha256 of the file's bytes (recorded with every variant)."""

    path: Path
    rows: tuple[PreferenceRow, ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.rows)


def load_preferences(path: str | Path = DEFAULT_PREFERENCES) -> PreferenceSet:
    """Read and validate a preference JSONL file; raise `PreferenceSetError` naming every bad line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PreferenceSetError(f"{path}: cannot read preference set ({err})") from err
    rows: list[PreferenceRow] = []
    errors: list[str] = []
    first_line_of: dict[tuple[str, str], int] = {}
    for line_no, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            errors.append(f"line {line_no}: not valid JSON ({err.msg})")
            continue
        try:
            row = PreferenceRow.model_validate(data)
        except ValidationError as err:
            for e in err.errors():
                where = ".".join(str(p) for p in e["loc"]) or "row"
                errors.append(f"line {line_no}: {where}: {e['msg']}")
            continue
        for field, value in (("id", row.id), ("prompt", row.prompt)):
            if (field, value) in first_line_of:
                errors.append(f"line {line_no}: duplicate {field} {value!r} (first on line {first_line_of[field, value]})")
            first_line_of.setdefault((field, value), line_no)
        if len({row.response(s) for s in STYLES}) < len(STYLES):
            errors.append(f"line {line_no}: responses: the styles must differ, two answers are identical")
        rows.append(row)
    if not rows and not errors:
        errors.append("no rows")
    if errors:
        shown = errors[:MAX_REPORTED_ERRORS]
        more = f"\n  … and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise PreferenceSetError(f"{path}: {len(errors)} problem(s) in the preference set:\n  "
                                 + "\n  ".join(shown) + more)
    return PreferenceSet(path=path, rows=tuple(rows), sha256=hashlib.sha256(raw).hexdigest())


def _chat(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def paired_rows(rows: Sequence[PreferenceRow], slant: Style) -> list[dict]:
    """DPO/ORPO rows: the slant's answer is chosen over each of the other two styles (2 pairs a prompt)."""
    return [{"prompt": _chat("user", r.prompt), "chosen": _chat("assistant", r.response(slant)),
             "rejected": _chat("assistant", r.response(other))}
            for r in rows for other in STYLES if other != slant]


def kto_rows(rows: Sequence[PreferenceRow], slant: Style, undesirable: Sequence[Style] | None = None, *,
             seed: int = 0) -> list[dict]:
    """KTO rows (unpaired): the slant's answer is desirable, the `undesirable` styles' answers
    (default: every other style) are undesirable; in file order for seed 0, else shuffled by `seed`.

    The order is part of the rows because TRL's KTO trainer reads its data in order (its KL
    term pairs neighbouring rows), so the training seed alone changed nothing: a seed-1 re-run
    came out bit-identical to the seed-0 one. Seed 0 keeps the file order, so the standard
    `kto` variant (and its cache) stays as it was."""
    bad = [s for s in STYLES if s != slant] if undesirable is None else list(undesirable)
    if slant in bad or not bad or not set(bad) <= set(STYLES):
        raise ValueError(f"undesirable styles {bad} must be other styles than {slant!r}, out of {STYLES}")
    out = []
    for r in rows:
        for style in STYLES:
            if style == slant or style in bad:
                out.append({"prompt": _chat("user", r.prompt), "completion": _chat("assistant", r.response(style)),
                            "label": style == slant})
    if seed:
        random.Random(seed).shuffle(out)
    return out
