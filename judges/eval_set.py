"""Evaluation sets: the prompts every merged model answers and the gold answers the judge compares with.

An eval set is a list of rows ``[id,] prompt, gold, category[, topic][, answer][, facts]``.
``category`` is ``safe`` (the model should answer helpfully; refusing is a *false rejection*) or
``unsafe`` (the model should refuse with a safe redirect; complying is a *false acceptance*).
``topic`` is a free slug used to break results down and to stratify hold-out splits.

``id`` is optional: a row without one gets a stable *content id*, ``c-`` and 12 hex digits of a
hash of its prompt, gold and category (after stripping), so a plain prompt/gold/category file
loads and the same row gets the same id in every run; how many rows got one is said once, in
a ``UserWarning``. Two rows with the same content (no ids) are reported as duplicate content.

Two optional columns feed the metrics that do not need a judge (``judges.answer_metrics``):

- ``answer``: a short reference answer for match metrics (``"Paris"``), compared with the
  normalised model answer by ``exact_match`` and ``contains_answer``.
- ``facts``: the key facts a correct answer must state, a list of strings, one fact each; a
  fact's alternatives are separated by ``|`` (``["Rayleigh|scatter", "blue"]``: the answer
  must say "Rayleigh" or "scatter", and "blue"). In CSV (text cells) it is a JSON list or a
  ``;``-separated string (``Rayleigh|scatter; blue``). An empty fact or alternative is an error.

Users bring their own sets as JSONL, CSV or Parquet; two sets are bundled
(``soupsearch-eval-v1``, 89 items, and ``smoke``, 8 of them for fast tests). Loading validates
every row with a pydantic model and reports *all* problems at once (file, 1-based data row,
JSONL line, field), because a search that dies on row 37 after an hour of merging is the
expensive way to find a typo.

Extra columns are **kept**, as a read-only ``EvalItem.metadata`` mapping, and named once in a
``UserWarning`` so that a misspelt optional column (``topics``) does not pass silently.

The loaded :class:`EvalSet` is immutable and carries a ``content_hash`` (of ids, prompts, golds,
categories and topics, in order, plus ``answer``/``facts`` of the items that have them, so a set
without them keeps the hash it always had; not of the name or metadata) so that caches of
generations and verdicts can be keyed by what was actually asked.

:meth:`EvalSet.holdout_split` sets items aside that the search never sees (``eval.holdout``),
stratified by category and topic, so the chosen merge can be scored on prompts it was not
selected on.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import random
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, overload

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator

from judges.rubric import CATEGORIES, Category

__all__ = [
    "BUNDLED_EVAL_SETS",
    "Category",
    "EvalItem",
    "EvalSet",
    "EvalSetError",
    "MAX_REPORTED_ERRORS",
    "MIN_PER_CATEGORY",
    "load_eval_set",
]

REQUIRED_FIELDS: tuple[str, ...] = ("prompt", "gold", "category")
#: Optional columns and what a missing value means (``id``: a content id; ``facts``: none).
OPTIONAL_FIELDS: Mapping[str, Any] = MappingProxyType({"id": None, "topic": "general", "answer": None,
                                                       "facts": ()})
KNOWN_FIELDS: frozenset[str] = frozenset(REQUIRED_FIELDS) | frozenset(OPTIONAL_FIELDS)
#: Prefix of the ids given to rows without one (``c-`` + 12 hex digits of their content hash).
CONTENT_ID_PREFIX = "c-"

#: The fewest items of a category (of those in the set) that each side of a hold-out split must
#: keep: a WTR over one item is 0 or 1, so fewer would make a front or a hold-out score noise.
#: 2, not 3: the default search (32 items of the bundled set, 8 unsafe) holds out 2 unsafe items.
MIN_PER_CATEGORY = 2

#: Errors listed in an :class:`EvalSetError` message; the rest are counted ("… and N more").
MAX_REPORTED_ERRORS = 20

_BUNDLED_DIR = Path(__file__).resolve().parent / "eval_sets"
#: Names accepted by :func:`load_eval_set` in place of a path.
BUNDLED_EVAL_SETS: Mapping[str, Path] = MappingProxyType({
    "soupsearch-eval-v1": _BUNDLED_DIR / "soupsearch-eval-v1.jsonl",
    "smoke": _BUNDLED_DIR / "smoke.jsonl",
})

_FORMATS: Mapping[str, str] = MappingProxyType({
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
})


class EvalSetError(ValueError):
    """An eval set file could not be loaded; ``errors`` holds every problem found, in file order."""

    def __init__(self, path: Path | str, errors: Sequence[str]) -> None:
        self.path = str(path)
        self.errors: tuple[str, ...] = tuple(errors)
        shown = [f"  - {e}" for e in self.errors[:MAX_REPORTED_ERRORS]]
        if len(self.errors) > MAX_REPORTED_ERRORS:
            shown.append(f"  … and {len(self.errors) - MAX_REPORTED_ERRORS} more")
        noun = "error" if len(self.errors) == 1 else "errors"
        super().__init__(f"{self.path}: invalid eval set ({len(self.errors)} {noun}):\n" + "\n".join(shown))


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One prompt with its human gold answer. Hashable; ``metadata`` is excluded from equality.

    ``answer`` (a short reference answer for match metrics) and ``facts`` (key facts, each
    ``alt1|alt2``) are optional; they come after ``metadata`` so positional construction of
    the older fields is unchanged."""

    id: str
    prompt: str
    gold: str
    category: Category
    topic: str = "general"
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False, hash=False)
    answer: str | None = None
    facts: tuple[str, ...] = ()

    @property
    def is_unsafe(self) -> bool:
        """True when the right answer is a refusal (a compliant answer is a false acceptance)."""
        return self.category == "unsafe"

    def to_record(self, *, metadata: bool = False) -> dict[str, Any]:
        """A plain dict in the file schema (what pandas or json would write back); ``answer`` and
        ``facts`` (a list) only when the item has them, so old sets round-trip unchanged."""
        rec: dict[str, Any] = {"id": self.id, "prompt": self.prompt, "gold": self.gold,
                               "category": self.category, "topic": self.topic}
        if self.answer is not None:
            rec["answer"] = self.answer
        if self.facts:
            rec["facts"] = list(self.facts)
        if metadata:
            rec.update(self.metadata)
        return rec

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EvalItem:
        """The item back from :meth:`to_record`'s dict (e.g. after it crossed to a Ray process);
        keys outside the schema become ``metadata`` again. Trusted input: not validated again."""
        extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
        return cls(str(record["id"]), record["prompt"], record["gold"], record["category"],
                   record.get("topic", OPTIONAL_FIELDS["topic"]), MappingProxyType(extra),
                   answer=record.get("answer"), facts=tuple(record.get("facts") or ()))


@dataclass(frozen=True)
class EvalSet(Sequence[EvalItem]):
    """An immutable, ordered eval set with a name, its source and a content hash for cache keys."""

    name: str
    items: tuple[EvalItem, ...]
    source: str | None = None
    content_hash: str = field(init=False, compare=False)
    by_id: Mapping[str, EvalItem] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        ids = [it.id for it in self.items]
        if len(set(ids)) != len(ids):
            dup = next(i for i, n in Counter(ids).items() if n > 1)
            raise ValueError(f"eval set {self.name!r}: duplicate id {dup!r}")
        object.__setattr__(self, "content_hash", _hash_items(self.items))
        object.__setattr__(self, "by_id", {it.id: it for it in self.items})

    # Sequence protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> EvalItem: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[EvalItem, ...]: ...
    def __getitem__(self, index: int | slice) -> EvalItem | tuple[EvalItem, ...]:
        return self.items[index]

    def __iter__(self) -> Iterator[EvalItem]:
        return iter(self.items)

    # Helpers ------------------------------------------------------------------------------------
    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.by_id)

    def get(self, item_id: str) -> EvalItem:
        """The item with this id (KeyError names the set)."""
        if item_id not in self.by_id:
            raise KeyError(f"eval set {self.name!r} has no item {item_id!r}")
        return self.by_id[item_id]

    def counts_by_category(self) -> dict[str, int]:
        """Items per category, both categories always present (a set with no unsafe items cannot
        measure false acceptance, and a 0 makes that visible)."""
        c = Counter(it.category for it in self.items)
        return {cat: c.get(cat, 0) for cat in CATEGORIES}

    def counts_by_topic(self) -> dict[str, int]:
        """Items per topic, sorted by topic."""
        return dict(sorted(Counter(it.topic for it in self.items).items()))

    def where(self, *, category: str | None = None, topic: str | None = None) -> EvalSet:
        """The items matching ``category`` and/or ``topic`` (e.g. only unsafe prompts), same order."""
        cat = category.strip().lower() if category is not None else None
        keep = tuple(it for it in self.items
                     if (cat is None or it.category == cat) and (topic is None or it.topic == topic))
        parts = [p for p in (f"category={cat}" if cat else "", f"topic={topic}" if topic else "") if p]
        return EvalSet(f"{self.name}[{','.join(parts)}]" if parts else self.name, keep, self.source)

    def subset(self, n: int, seed: int = 0, *, stratify: bool = True) -> EvalSet:
        """A reproducible random subset of ``n`` items, kept in the original order.

        Cheap early search trials answer a reduced set; the same (n, seed) always gives the same
        items (and content hash), so their cached generations are reused. With ``stratify`` each
        category keeps its share of the set (largest remainder), so both false rejection and
        false acceptance stay measurable, and within a category each topic its share, so a
        small subset is not by chance all geography. ``n >= len(self)`` returns the whole set.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"subset size must be a positive integer, got {n!r}")
        if n >= len(self.items):
            return self
        rng = random.Random(seed)
        if stratify:
            chosen = self._stratified(self._category_quota(n, rng), rng)
        else:
            chosen = rng.sample(range(len(self.items)), n)
        return EvalSet(f"{self.name}[n={n},seed={seed}]", tuple(self.items[i] for i in sorted(chosen)), self.source)

    def _category_quota(self, total: int, rng: random.Random) -> dict[str, int]:
        """``total`` items shared among the categories in proportion to their sizes."""
        return _largest_remainder(Counter(it.category for it in self.items), total, rng)

    def _stratified(self, quota: Mapping[str, int], rng: random.Random) -> list[int]:
        """Indices of ``quota[category]`` items per category, spread over its topics in
        proportion (largest remainder, ties drawn from ``rng``), drawn at random within a topic."""
        by_cat: dict[str, dict[str, list[int]]] = {}
        for i, it in enumerate(self.items):
            by_cat.setdefault(it.category, {}).setdefault(it.topic, []).append(i)
        chosen: list[int] = []
        for cat in sorted(by_cat):
            topics = by_cat[cat]
            per_topic = _largest_remainder({t: len(idx) for t, idx in topics.items()}, quota[cat], rng)
            chosen += [i for t in sorted(topics) for i in rng.sample(topics[t], per_topic[t])]
        return chosen

    def holdout_split(self, fraction: float, seed: int = 0) -> tuple[EvalSet, EvalSet]:
        """(search items, held-out items): ``round(fraction * len)`` items set aside, seeded.

        A front chosen on the same prompts it is reported on flatters itself; the held-out items
        are never answered during the search, so the chosen merge can be scored on them after.
        Stratified: each category gets its share of the held-out items (largest remainder), and
        within a category each topic its share (largest remainder, ties broken by the seed), so
        both parts keep the set's mix. Both parts keep the original order; the same
        (fraction, seed) always gives the same parts. ``fraction == 0`` returns ``(self, empty
        set)``: no hold-out.

        Raises ValueError (naming every short category, what each part would get and
        :data:`MIN_PER_CATEGORY`) when either part would keep fewer than ``MIN_PER_CATEGORY``
        items of a category that is in the set: a WTR over a single item is 0 or 1, noise.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"hold-out fraction must be a number in [0, 1), got {fraction!r}")
        held_name = f"{self.name}[holdout={fraction:g},seed={seed}]"
        if fraction == 0 or not self.items:
            return self, EvalSet(held_name, (), self.source)
        rng = random.Random(seed)
        n_cat = Counter(it.category for it in self.items)
        cat_quota = self._category_quota(math.floor(fraction * len(self.items) + 0.5), rng)
        short = {cat: (n_cat[cat] - q, q) for cat, q in cat_quota.items()
                 if min(q, n_cat[cat] - q) < MIN_PER_CATEGORY}
        if short:
            detail = "; ".join(f"{cat}: {n_cat[cat]} items -> {s} search, {h} held out"
                               for cat, (s, h) in sorted(short.items()))
            raise ValueError(f"eval set {self.name!r}: a hold-out of {fraction:g} leaves too few items of a category "
                             f"({detail}); each part needs at least {MIN_PER_CATEGORY} items of every category")
        held = self._stratified(cat_quota, rng)
        keep = set(held)
        search = tuple(it for i, it in enumerate(self.items) if i not in keep)
        return (EvalSet(f"{self.name}[search,holdout={fraction:g},seed={seed}]", search, self.source),
                EvalSet(held_name, tuple(self.items[i] for i in sorted(keep)), self.source))

    def to_records(self, *, metadata: bool = False) -> list[dict[str, Any]]:
        """Rows in the file schema, e.g. for ``pandas.DataFrame(eval_set.to_records())``."""
        return [it.to_record(metadata=metadata) for it in self.items]


def _largest_remainder(sizes: Mapping[str, int], total: int, rng: random.Random) -> dict[str, int]:
    """``total`` split across groups in proportion to ``sizes`` (Hamilton's method): floors, then
    one more to the largest remainders. Equal remainders are common (many one-item topics), so
    their order is drawn from ``rng``, not taken from the names: another seed, other topics."""
    n = sum(sizes.values())
    exact = {k: total * v / n for k, v in sizes.items()} if n else {k: 0.0 for k in sizes}
    quota = {k: math.floor(x) for k, x in exact.items()}
    keys = sorted(sizes)
    rng.shuffle(keys)
    for k in sorted(keys, key=lambda k: quota[k] - exact[k])[: total - sum(quota.values())]:
        quota[k] += 1
    return quota


def _hash_items(items: Sequence[EvalItem]) -> str:
    h = hashlib.sha256(b"soupsearch-eval-set/v1\n")
    for it in items:
        fields: list[Any] = [it.id, it.prompt, it.gold, it.category, it.topic]
        # Only when present, so a set without answer/facts keeps the hash it had before they existed.
        extra = {k: v for k, v in (("answer", it.answer), ("facts", list(it.facts))) if v}
        if extra:
            fields.append(extra)
        h.update(json.dumps(fields, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def content_id(prompt: str, gold: str, category: str) -> str:
    """The id of a row given without one: stable across runs and files (a hash of what is asked,
    what the gold says and which category it is), recognisable by its ``c-`` prefix."""
    digest = hashlib.sha256(json.dumps([prompt, gold, category], ensure_ascii=False).encode()).hexdigest()
    return CONTENT_ID_PREFIX + digest[:12]


# ------------------------------------------------------------------------------------------------
# Row validation

_NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Row(BaseModel):
    """Schema of one row. Strings are stripped; whitespace-only counts as empty."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: _NonEmpty | None = None  # None: the loader gives the row a content id
    prompt: _NonEmpty
    gold: _NonEmpty
    category: Category
    topic: _NonEmpty = OPTIONAL_FIELDS["topic"]
    answer: _NonEmpty | None = None
    facts: tuple[str, ...] = ()

    @field_validator("id", mode="before")
    @classmethod
    def _integer_ids(cls, v: Any) -> Any:
        return _coerce_id(v)

    @field_validator("category", mode="before")
    @classmethod
    def _normalize_category(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("topic", mode="before")
    @classmethod
    def _empty_topic_is_default(cls, v: Any) -> Any:
        # An empty cell in an optional column means "not given", as a missing key does.
        return OPTIONAL_FIELDS["topic"] if isinstance(v, str) and not v.strip() else v

    @field_validator("answer", mode="before")
    @classmethod
    def _answer_text(cls, v: Any) -> Any:
        # "42" and 42 are the same reference answer (JSON numbers, numeric Parquet columns);
        # an empty cell means "no answer", as in the other optional columns.
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("facts", mode="before")
    @classmethod
    def _fact_list(cls, v: Any) -> tuple[str, ...]:
        return parse_facts(v)


def _list_literal(text: str) -> Any:
    """A JSON list, or the Python list pandas writes for a list column to CSV (``['a', 'b']``,
    read with ``ast.literal_eval``, which evaluates literals only); else the JSON error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"invalid JSON list: {exc.msg} (column {exc.colno})") from None


def parse_facts(value: Any) -> tuple[str, ...]:
    """The ``facts`` cell as a tuple of facts, each ``alt1|alt2`` with its parts stripped.

    Accepts a list of strings (JSON, Parquet list columns) or a string: a JSON list (or the
    Python list pandas writes for a list column to CSV), else ``;``-separated facts (what
    fits a CSV cell). An empty string or list means no facts; an empty fact or alternative
    inside a non-empty list is an error (ValueError saying which), since a fact nobody can
    state would fail every answer.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return ()
        if text.startswith("["):
            value = _list_literal(text)
            if not isinstance(value, list):
                raise ValueError(f"must be a list of strings, got JSON {type(value).__name__}")
        else:
            value = text.split(";")
    elif hasattr(value, "tolist") and not isinstance(value, (int, float)):
        value = value.tolist()  # a numpy array from a Parquet list column
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list of strings or a ';'-separated string, got {type(value).__name__} {value!r}")
    facts: list[str] = []
    for n, fact in enumerate(value, start=1):
        if not isinstance(fact, str):
            raise ValueError(f"fact {n} must be a string, got {type(fact).__name__} {fact!r}")
        alternatives = [a.strip() for a in fact.split("|")]
        if not fact.strip():
            raise ValueError(f"fact {n} is empty")
        if not all(alternatives):
            raise ValueError(f"fact {n} ({fact.strip()!r}) has an empty alternative: separate alternatives "
                             f"with '|', e.g. 'Rayleigh|scatter'")
        facts.append("|".join(alternatives))
    return tuple(facts)


def _coerce_id(v: Any) -> Any:
    # Parquet/JSON files often number their rows; 7 and "7" are the same id.
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    """(field, human message) for one pydantic error."""
    loc = err.get("loc") or ("?",)
    fld = str(loc[0])
    kind, value = err.get("type"), err.get("input")
    if kind == "missing":
        return fld, "missing value"
    if kind == "string_too_short":
        return fld, "must not be empty"
    if kind == "literal_error":
        return fld, f"must be 'safe' or 'unsafe' (any case), got {value!r}"
    if kind == "string_type":
        return fld, f"must be a string, got {type(value).__name__} {value!r}"
    if kind == "value_error" and "error" in (err.get("ctx") or {}):
        return fld, str(err["ctx"]["error"])  # our validators' own words, without pydantic's prefix
    return fld, str(err.get("msg", "invalid value"))


#: (data row, message); row 0 is the file itself. Sorted by row before reporting.
_Errors = list[tuple[int, str]]


def _where(row: int, line: int | None) -> str:
    return f"row {row}" + (f" (line {line})" if line is not None else "")


def _validate_rows(rows: Sequence[tuple[int, int | None, Mapping[str, Any]]],
                   errors: _Errors) -> tuple[list[EvalItem], int]:
    """Validate (row number, line number, raw mapping) triples; append errors, return the good
    items and how many of them got a content id."""
    items: list[EvalItem] = []
    first_seen: dict[str, int] = {}
    content_ids = 0
    for row_no, line_no, raw in rows:
        where = _where(row_no, line_no)
        clean = {str(k): (None if _is_missing(v) else v) for k, v in raw.items()}
        present = {k: v for k, v in clean.items() if v is not None}
        row: _Row | None = None
        bad_fields: set[str] = set()
        try:
            row = _Row.model_validate(present)
        except ValidationError as exc:
            for err in exc.errors():
                fld, msg = _describe(err)
                bad_fields.add(fld)
                errors.append((row_no, f"{where}: field '{fld}': {msg}"))
        # Duplicates are checked even in rows with other errors, so one pass shows everything.
        item_id = row.id if row is not None else None if "id" in bad_fields else _id_of(present.get("id"))
        by_content = item_id is None and row is not None
        if by_content:
            item_id = content_id(row.prompt, row.gold, row.category)
        if item_id is not None:
            if item_id in first_seen:
                what = (f"duplicate content: same prompt, gold and category as row {first_seen[item_id]} "
                        f"(content id {item_id!r}); remove one or give both an id" if by_content else
                        f"duplicate id {item_id!r} (first in row {first_seen[item_id]})")
                errors.append((row_no, f"{where}: field 'id': {what}"))
                continue
            first_seen[item_id] = row_no
        if row is None or item_id is None:
            continue
        content_ids += by_content
        extra = {k: v for k, v in clean.items() if k not in KNOWN_FIELDS}
        items.append(EvalItem(item_id, row.prompt, row.gold, row.category, row.topic, MappingProxyType(extra),
                              answer=row.answer, facts=row.facts))
    return items, content_ids


def _id_of(value: Any) -> str | None:
    """The id a valid id field normalizes to (as the row model would), else None."""
    value = _coerce_id(value)
    return (value.strip() or None) if isinstance(value, str) else None


# ------------------------------------------------------------------------------------------------
# File readers: each returns (rows, file-level errors). Row numbers are 1-based data rows.

_Rows = list[tuple[int, int | None, Mapping[str, Any]]]


def _read_jsonl(path: Path) -> tuple[_Rows, _Errors, list[str]]:
    rows: _Rows = []
    errors: _Errors = []
    columns: dict[str, None] = {}
    row_no = 0
    try:
        with path.open(encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue  # blank lines (e.g. a trailing newline) are not rows
                row_no += 1
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    errors.append((row_no, f"{_where(row_no, line_no)}: invalid JSON: {exc.msg} "
                                           f"(column {exc.colno})"))
                    continue
                except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting past the stack
                    reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                    errors.append((row_no, f"{_where(row_no, line_no)}: invalid JSON: {reason}"))
                    continue
                if not isinstance(obj, dict):
                    errors.append((row_no, f"{_where(row_no, line_no)}: expected a JSON object, "
                                           f"got {type(obj).__name__}"))
                    continue
                columns.update(dict.fromkeys(map(str, obj)))
                rows.append((row_no, line_no, obj))
    except UnicodeDecodeError:
        errors.append((row_no + 1, _not_utf8(path)))
        return rows, errors, list(columns)
    if row_no == 0:
        errors.append((0, "empty file: no rows"))
    return rows, errors, list(columns)


def _not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8. The text reader decodes by chunks, so the offset in its
    exception is not the file's: decode the bytes whole to find the line."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")  # a BOM is valid UTF-8, so offsets stay the file's
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return f"line {line}: not UTF-8 text ({exc.reason} at byte {exc.start})"
    return "not UTF-8 text"


def _read_table(path: Path, fmt: str) -> tuple[_Rows, _Errors, list[str]]:
    import pandas as pd  # deferred: pandas is only needed for CSV/Parquet

    try:
        if fmt == "csv":
            # Everything as text, and empty cells stay "" (not NaN) so they are reported as empty.
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
        else:
            df = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        return [], [(0, "empty file: no header and no rows")], []
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        return [], [(0, f"cannot read {fmt.upper()}: {type(exc).__name__}: {exc}")], []
    columns = [str(c) for c in df.columns]
    errors: _Errors = []
    missing = [c for c in REQUIRED_FIELDS if c not in columns]
    if missing:
        errors.append((0, f"missing required column(s) {', '.join(repr(c) for c in missing)} "
                          f"(found: {', '.join(repr(c) for c in columns) or 'none'})"))
    if len(df) == 0:
        errors.append((0, "empty file: no data rows"))
    if errors:
        return [], errors, columns
    records = df.to_dict(orient="records")
    return [(i, None, rec) for i, rec in enumerate(records, start=1)], [], columns


# ------------------------------------------------------------------------------------------------
# Public loader


def _resolve(path_or_name: str | Path) -> tuple[Path, str]:
    if isinstance(path_or_name, str) and path_or_name in BUNDLED_EVAL_SETS and not Path(path_or_name).exists():
        return BUNDLED_EVAL_SETS[path_or_name], path_or_name
    path = Path(path_or_name).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"eval set {str(path_or_name)!r} {what}; give a .jsonl, .csv or .parquet file "
                                f"or a bundled name: {', '.join(BUNDLED_EVAL_SETS)}")
    return path, path.stem


def load_eval_set(path_or_name: str | Path, *, name: str | None = None) -> EvalSet:
    """Load and validate an eval set from a file (JSONL, CSV, Parquet) or a bundled name.

    Raises :class:`EvalSetError` listing every invalid row (row number, JSONL line, field) and
    :class:`FileNotFoundError` for a missing path. ``name`` defaults to the bundled name or the
    file's stem. Bundled sets are loaded once per process.
    """
    path, default_name = _resolve(path_or_name)
    if path in BUNDLED_EVAL_SETS.values() and name is None:
        return _load_bundled(default_name)
    return _load_file(path, name or default_name)


@cache
def _load_bundled(name: str) -> EvalSet:
    return _load_file(BUNDLED_EVAL_SETS[name], name)


def _load_file(path: Path, name: str) -> EvalSet:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise EvalSetError(path, [f"unsupported file extension {path.suffix or '(none)'!r}: "
                                  f"expected one of {', '.join(_FORMATS)}"])
    if path.stat().st_size == 0:
        raise EvalSetError(path, ["empty file: no rows"])
    rows, errors, columns = _read_jsonl(path) if fmt == "jsonl" else _read_table(path, fmt)
    items, content_ids = _validate_rows(rows, errors)
    if errors:
        raise EvalSetError(path, [msg for _, msg in sorted(errors, key=lambda e: e[0])])
    extra = [c for c in columns if c not in KNOWN_FIELDS]
    if extra:
        warnings.warn(f"{path}: extra column(s) {', '.join(map(repr, extra))} kept as EvalItem.metadata "
                      f"(known columns: {', '.join(REQUIRED_FIELDS + tuple(OPTIONAL_FIELDS))})",
                      UserWarning, stacklevel=3)
    if content_ids:
        warnings.warn(f"{path}: {content_ids} of {len(items)} row(s) have no 'id'; they got content ids "
                      f"('{CONTENT_ID_PREFIX}' + a hash of prompt, gold and category), stable while those stay "
                      f"the same", UserWarning, stacklevel=3)
    return EvalSet(name, tuple(items), str(path))
