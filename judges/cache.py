"""Persistent verdict cache (SQLite), shared across trials and runs.

Merges that differ slightly often produce identical answers to many prompts (refusals,
short facts), and resumed searches re-ask old questions: a judge call is the expensive
part, so verdicts are stored by a hash of everything that determines them — rubric
version, judge identity (backend + model + order setting), prompt, gold, answer,
category, the order(s) the judge sees and, when the item has them, its facts and
reference answer. Only OK verdicts are stored; failures are
retried next time. One SQLite connection per thread (sqlite3 connections must not be
shared across threads), WAL mode and a busy timeout make it safe for a judge's thread
pool and for several processes on one file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

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


class VerdictCache:
    """Key -> OK verdict, in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
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
        if row is None:
            return None
        data = json.loads(row[0])
        return Verdict(item.item_id, item.category, VerdictStatus.OK,
                       {d: Outcome(o) for d, o in data["outcomes"].items()}, order=Order(data["order"]),
                       judge=data["judge"], attempts=0, cached=True)

    def put(self, key: str, verdict: Verdict) -> None:
        """Store an OK verdict; anything else is ignored (failures must be retried later)."""
        if not verdict.ok:
            return
        payload = json.dumps({"outcomes": {d: o.value for d, o in verdict.outcomes.items()},
                              "order": verdict.order.value, "judge": verdict.judge})
        self._conn().execute("INSERT OR REPLACE INTO verdicts (key, payload, created) VALUES (?, ?, ?)",
                             (key, payload, time.time()))

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
    """Wraps any judge: serves cached verdicts, sends only the misses to the inner judge."""

    def __init__(self, inner: Judge, cache: VerdictCache) -> None:
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
        out: list[Verdict | None] = [self.cache.get(k, it) for k, it in zip(keys, items)]
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            fresh = self.inner.judge([items[i] for i in todo])
            for i, v in zip(todo, fresh):
                self.cache.put(keys[i], v)
                out[i] = v
        return [v for v in out if v is not None]
