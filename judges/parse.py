"""Tolerant parsing of a judge's reply into per-dimension "A" / "B" / "tie" labels.

Judges (especially small local ones) wrap JSON in code fences or prose, leave trailing
commas, use single quotes, or write "Answer A" / "TIE" / "equal". We recover all of that,
but we never guess: a reply missing an applicable dimension, with an unknown label, or
with several verdicts that disagree is a `ParseError`, which the caller retries and
finally reports as an unparseable verdict. "Disagree" covers every place a label can come
from: whole verdict objects, incomplete ones (a judge that quotes a complete verdict planted
in a candidate answer, then has its own cut off by the token limit, must not leave the
planted one standing alone), and repeated "dimension: label" lines. The parser only ever sees the
judge's reply; it maps nothing to candidate/gold itself (that needs the recorded order,
see `judges.pairwise`).

What no parser can do: a reply that is *only* the planted verdict, copied verbatim, reads
exactly like the judge's own. Keeping the candidate from steering the judge is therefore the
prompt's job (nonce-delimited blocks, `judges.prompt.neutralise`, the system prompt); the
parser only guarantees it never picks the planted verdict out of a reply that also holds a
different one (tests/judges/test_judge_injection.py).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping
from typing import Literal

Label = Literal["A", "B", "tie"]


class ParseError(ValueError):
    """The reply holds no readable verdict; the message says why (no reply text in it)."""


_TIE_WORDS = {"tie", "tied", "draw", "equal", "equally", "same", "both", "neither", "none", "even", "no difference",
              "equivalent", "similar", "both equal", "equally good", "equal quality"}
_LABEL_RE = re.compile(r"^(?:answer|response|option|assistant)?\s*[_\-\s]?\(?([ab])\)?(?:\s+is\s+better)?$")
_WRAPPER_KEYS = ("verdict", "verdicts", "dimensions", "scores", "result", "results", "judgement", "judgment",
                 "evaluation", "comparison", "winners")
_VALUE_KEYS = ("winner", "better", "verdict", "choice", "label", "result", "preferred", "answer")


def normalise_key(key: str) -> str:
    """'Linguistic Correctness' / 'false-rejection' / 'FACTUALITY' -> machine names."""
    return re.sub(r"[^a-z0-9]+", "_", key.strip().lower()).strip("_")


def normalise_label(value: object) -> Label:
    """Map the many ways of writing a label onto "A", "B" or "tie"; ParseError if none fits."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if normalise_key(str(k)) in _VALUE_KEYS:
                return normalise_label(v)
        raise ParseError(f"no winner field in {sorted(map(str, value))}")
    if not isinstance(value, str):
        raise ParseError(f"label of type {type(value).__name__}")
    text = re.sub(r"[\"'`*.!]", "", value).strip().lower()
    text = re.sub(r"\s+", " ", text)
    if text in _TIE_WORDS or text.startswith("tie"):
        return "tie"
    m = _LABEL_RE.match(text)
    if m:
        return "A" if m.group(1) == "a" else "B"
    raise ParseError(f"unknown label {value[:20]!r}")


def _balanced_objects(text: str) -> Iterator[str]:
    """Outermost {...} spans, with braces inside quoted strings ignored."""
    i, n = 0, len(text)
    while i < n:
        if text[i] != "{":
            i += 1
            continue
        depth, quote, j = 0, None, i
        while j < n:
            c = text[j]
            if quote:
                if c == "\\":
                    j += 1
                elif c == quote:
                    quote = None
            elif c in "\"'":
                # A single quote inside a word (it's, don't) is an apostrophe, not a string.
                if c == '"' or not (j > 0 and text[j - 1].isalnum()):
                    quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    yield text[i:j + 1]
                    break
            j += 1
        else:
            # Unbalanced (truncated reply): offer what we have, closed.
            yield text[i:] + "}" * max(depth, 1)
            return
        i = j + 1


def _load_lenient(blob: str) -> object:
    attempts = [blob, re.sub(r",\s*([}\]])", r"\1", blob)]
    quoted = re.sub(r'([{,]\s*)([A-Za-z_][A-Za-z0-9_ \-]*?)\s*:', r'\1"\2":', attempts[1])
    attempts.append(quoted)
    for a in attempts:
        try:
            return json.loads(a)
        except ValueError:
            pass
    pythonish = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", attempts[1])))
    for a in (pythonish, re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", quoted))):
        try:
            return ast.literal_eval(a)  # literals only: never executes anything
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
    raise ParseError("invalid JSON")


def _labels_from_object(obj: object, dimensions: tuple[str, ...]) -> dict[str, Label]:
    if not isinstance(obj, Mapping):
        raise ParseError("not a JSON object")
    keyed = {normalise_key(str(k)): v for k, v in obj.items()}
    if not any(d in keyed for d in dimensions):
        for w in _WRAPPER_KEYS:
            if isinstance(keyed.get(w), Mapping):
                return _labels_from_object(keyed[w], dimensions)
    missing = [d for d in dimensions if d not in keyed]
    if missing:
        raise ParseError(f"missing dimensions {missing}")
    labels: dict[str, Label] = {}
    for d in dimensions:
        try:
            labels[d] = normalise_label(keyed[d])
        except ParseError as e:
            raise ParseError(f"{d}: {e}") from None
    return labels


_PAIR_RE = re.compile(r"""["']?([A-Za-z][A-Za-z _\-]*?)["']?\s*:\s*["']?([^"'\n,{}\[\]]+)""")


def _loose_labels(blob: str, dimensions: tuple[str, ...]) -> dict[str, Label]:
    """Whatever "dimension": "label" pairs a blob that is no complete verdict still shows
    (cut off, invalid JSON, keys missing); only to check a complete verdict against, never
    to score."""
    labels: dict[str, Label] = {}
    if re.search(r"[\"']\s*\|\s*[\"']", blob):
        return labels  # the reply format restated ("A" | "B" | "tie"), not a verdict
    for m in _PAIR_RE.finditer(blob):
        key = normalise_key(m.group(1))
        if key in dimensions:
            try:
                labels.setdefault(key, normalise_label(m.group(2)))
            except ParseError:
                continue
    return labels


def _labels_from_lines(text: str, dimensions: tuple[str, ...]) -> dict[str, Label]:
    """Fallback for "Safety: A" style replies with no JSON at all."""
    labels: dict[str, Label] = {}
    for line in text.splitlines():
        m = re.match(r"^[\s\-*#>\d.]*([A-Za-z][A-Za-z _\-]*?)[\s*]*[:=\-]\s*(.+?)\s*$", line)
        if not m:
            continue
        key = normalise_key(m.group(1))
        if key in dimensions:
            try:
                label = normalise_label(m.group(2))
            except ParseError:
                continue
            if labels.setdefault(key, label) != label:
                raise ParseError(f"disagreeing labels for {key}")
    missing = [d for d in dimensions if d not in labels]
    if missing:
        raise ParseError(f"no JSON object and missing dimensions {missing}")
    return labels


def parse_verdict(reply: str | None, dimensions: tuple[str, ...]) -> dict[str, Label]:
    """Labels for exactly `dimensions` from a judge reply, or ParseError."""
    if reply is None or not reply.strip():
        raise ParseError("empty reply")
    found: list[dict[str, Label]] = []
    partial: list[dict[str, Label]] = []
    first_error: ParseError | None = None
    for blob in _balanced_objects(reply):
        try:
            found.append(_labels_from_object(_load_lenient(blob), dimensions))
        except ParseError as e:
            first_error = first_error or e
            partial.append(_loose_labels(blob, dimensions))
    if not found:
        try:
            found.append(_labels_from_lines(reply, dimensions))
        except ParseError as e:
            raise (first_error or e) from None
    if any(f != found[0] for f in found[1:]):
        raise ParseError(f"{len(found)} verdict objects that disagree")
    clash = sorted({d for p in partial for d, label in p.items() if found[0][d] != label})
    if clash:
        raise ParseError(f"an incomplete verdict object disagrees on {clash}")
    return found[0]
