"""Persistent verdict cache (SQLite), shared across trials and runs.

Merges that differ slightly often produce identical answers to many prompts (refusals,
short facts), and resumed searches re-ask old questions: a judge call is the expensive
part, so verdicts are stored by a hash of everything that determines them — rubric
version, judge identity (backend + model + order setting), prompt, gold, answer,
category, the order(s) the judge sees and, when the item has them, its facts and
reference answer. Only OK verdicts are stored; failures are
retried next time. One SQLite connection per thread (sqlite3 connections must not be
shared across threads), WAL mode and a busy timeout make it safe for a judge's thread
pool and for several processes on one file of a local disk.

WAL's shared-memory index does not work across the hosts of a network filesystem, so a
search whose judges run on several nodes gives the file to one process (`exclusive=True`:
SQLite then keeps the WAL index in that process's memory and never maps a `-shm` file)
and the judges reach it through `lookup` / `store`, the batch calls a `VerdictStore`
offers (search/verdict_owner.py serves them from a Ray actor).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from judges.base import Judge
from judges.verdicts import JudgeItem, Order, Outcome, Verdict, VerdictStatus


def cache_key(rubric_version: str, judge_identity: str, item: JudgeItem, order: Order) -> str:
    fields: list[object] = [rubric_version, judge_identity, item.prompt, item.gold, item.answer, item.category,
                            order.value]
    # A judge may check the item's facts / reference answer, so they determine the verdict; added
    # only when given, so the keys of items without them (every cache written before) still hit.
    extra = {k: v for k, v in (("reference_answer", item.reference_answer), ("facts", list(item.facts))) if v}
    if extra:
        fields.append(extra)
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


class VerdictStore(Protocol):
    """Where `CachedJudge` keeps verdicts: whole batches per call, so a store in another
    process (or on another node) costs one round trip per judge call, not one per item."""

    def lookup(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored payloads of those `keys` that are present."""

    def store(self, rows: Sequence[tuple[str, str]]) -> None:
        """Keep (key, payload) rows; they are durable once this returns."""


def verdict_payload(verdict: Verdict) -> str:
    """What the cache keeps of an OK verdict (outcomes, order, judge): item ids are not part of it."""
    return json.dumps({"outcomes": {d: o.value for d, o in verdict.outcomes.items()},
                       "order": verdict.order.value, "judge": verdict.judge})


def verdict_from_payload(payload: str, item: JudgeItem) -> Verdict:
    """A stored payload re-labelled for `item` (the same judgement may serve another item id)."""
    data = json.loads(payload)
    return Verdict(item.item_id, item.category, VerdictStatus.OK,
                   {d: Outcome(o) for d, o in data["outcomes"].items()}, order=Order(data["order"]),
                   judge=data["judge"], attempts=0, cached=True)


class VerdictCache:
    """Key -> OK verdict, in one SQLite file.

    `exclusive=True` is for a file that one process owns (the search's cache-owner actor):
    SQLite's EXCLUSIVE locking mode, set before WAL, keeps the WAL index in process memory,
    which is what makes WAL usable on a network filesystem."""

    def __init__(self, path: str | Path, *, exclusive: bool = False) -> None:
        self.path = Path(path)
        self.exclusive = exclusive
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self.hits = 0
        self.misses = 0
        self._conn().execute(
            "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, payload TEXT NOT NULL, created REAL NOT NULL)")

    def __repr__(self) -> str:
        return f"VerdictCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            if self.exclusive:
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def get(self, key: str, item: JudgeItem) -> Verdict | None:
        """The cached verdict re-labelled for `item`, or None (counted as hit or miss)."""
        row = self._conn().execute("SELECT payload FROM verdicts WHERE key = ?", (key,)).fetchone()
        with self._lock:
            if row is None:
                self.misses += 1
            else:
                self.hits += 1
        return None if row is None else verdict_from_payload(row[0], item)

    def put(self, key: str, verdict: Verdict) -> None:
        """Store an OK verdict; anything else is ignored (failures must be retried later)."""
        if verdict.ok:
            self.store([(key, verdict_payload(verdict))])

    def lookup(self, keys: Sequence[str]) -> dict[str, str]:
        """The payloads of the stored `keys` (counted as hits and misses)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        conn = self._conn()
        for start in range(0, len(wanted), 500):  # under SQLite's limit on bound parameters
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found |= dict(conn.execute(f"SELECT key, payload FROM verdicts WHERE key IN ({marks})", chunk).fetchall())
        with self._lock:
            hits = sum(k in found for k in keys)
            self.hits += hits
            self.misses += len(keys) - hits
        return found

    def store(self, rows: Sequence[tuple[str, str]]) -> None:
        """Keep (key, payload) rows in one transaction: all of them are on disk when it returns."""
        if not rows:
            return
        now = time.time()
        with self._conn() as conn:  # BEGIN … COMMIT
            conn.execute("BEGIN")
            conn.executemany("INSERT OR REPLACE INTO verdicts (key, payload, created) VALUES (?, ?, ?)",
                             [(k, p, now) for k, p in rows])

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass  # created in a thread that is gone; sqlite closes it with the thread
            self._connections.clear()
        self._local = threading.local()


class CachedJudge:
    """Wraps any judge: serves cached verdicts, sends only the misses to the inner judge, and
    stores the new OK verdicts as one batch before it returns them (a judge that crashes
    loses at most the batch it was judging)."""

    def __init__(self, inner: Judge, cache: VerdictStore) -> None:
        self.inner = inner
        self.cache = cache
        self.rubric = inner.rubric
        self.identity = inner.identity

    def __repr__(self) -> str:
        return f"CachedJudge({self.inner!r}, {self.cache!r})"

    def order_for(self, item: JudgeItem) -> Order:
        return self.inner.order_for(item)

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        keys = [cache_key(self.rubric.version, self.identity, it, self.inner.order_for(it)) for it in items]
        found = self.cache.lookup(keys) if items else {}
        out: list[Verdict | None] = [verdict_from_payload(found[k], it) if k in found else None
                                     for k, it in zip(keys, items)]
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            fresh = self.inner.judge([items[i] for i in todo])
            for i, v in zip(todo, fresh):
                out[i] = v
            self.cache.store([(keys[i], verdict_payload(v)) for i, v in zip(todo, fresh) if v.ok])
        return [v for v in out if v is not None]
