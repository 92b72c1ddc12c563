"""The verdict cache of a search, owned by one actor on the driver's node.

On a cluster the experiment folder is shared storage that judge actors on several nodes
see, and SQLite's WAL does not work across the hosts of a network filesystem (its index
is shared memory). So one actor, pinned to the driver's node, opens `verdicts.sqlite`
alone (judges.VerdictCache with `exclusive=True`: no `-shm` file) and judges ask it for
hits and send it their new verdicts, a batch per judge call (`RemoteVerdictStore`).
A local run uses the same path: the round trip costs far less than one judgement.

The owner is never allowed to stop a search: when it cannot be reached (dead, restarting,
hung), a judge warns once and judges uncached until it answers again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from judges import VerdictCache

log = logging.getLogger(__name__)

#: How long a judge waits on the owner per call before it judges without the cache.
OWNER_TIMEOUT_S = 60.0


@ray.remote
class VerdictCacheOwner:
    """Holds the SQLite file; one call at a time (Ray runs an actor's calls in order), so
    one connection serves them all."""

    def __init__(self, path: str) -> None:
        self.cache = VerdictCache(path, exclusive=True)

    def lookup(self, keys: list[str]) -> dict[str, str]:
        return self.cache.lookup(keys)

    def store(self, rows: list[tuple[str, str]]) -> int:
        self.cache.store(rows)
        return len(rows)

    def stats(self) -> dict[str, Any]:
        """Counts for tests and logs: stored verdicts, hits and misses of this owner's life."""
        return {"verdicts": len(self.cache), "hits": self.cache.hits, "misses": self.cache.misses,
                "path": str(self.cache.path)}

    def close(self) -> None:
        self.cache.close()


def owner_name(namespace: str) -> str:
    """The owner's actor name in a search's namespace (one per search)."""
    return f"{namespace}-verdicts"


def start_verdict_owner(path: Path, name: str, namespace: str, max_restarts: int) -> Any:
    """The owner actor, on the node this driver runs on (where the experiment folder is
    written from), up and holding the file when this returns. Ray restarts it after a crash
    (`max_restarts`); a restarted owner reopens the same file, so nothing acknowledged is lost."""
    node = ray.get_runtime_context().get_node_id()
    owner = VerdictCacheOwner.options(
        name=name, namespace=namespace, num_cpus=0, max_restarts=max_restarts, max_task_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)).remote(str(path))
    ray.get(owner.stats.remote())
    return owner


class RemoteVerdictStore:
    """A `judges.VerdictStore` whose file is held by the owner actor; used inside judge actors.

    A failed call is a cache miss (lookup) or a dropped batch (store) with one warning, never
    an error: the verdicts still reach the trial, and later calls try the owner again."""

    def __init__(self, owner: tuple[str, str], timeout_s: float = OWNER_TIMEOUT_S) -> None:
        self.owner = owner  # (actor name, namespace): looked up by name, not passed as a handle,
        # because Ray cannot restart an actor whose constructor arguments hold a handle (ray#53727)
        self.timeout_s = timeout_s
        self.down: str = ""  # why the owner could not be reached, while it cannot

    def lookup(self, keys: Sequence[str]) -> dict[str, str]:
        found = self._call("lookup", list(keys))
        return found if isinstance(found, dict) else {}

    def store(self, rows: Sequence[tuple[str, str]]) -> None:
        if rows:
            self._call("store", list(rows))

    def _call(self, method: str, arg: list) -> Any:
        try:
            handle = ray.get_actor(self.owner[0], namespace=self.owner[1])
            result = ray.get(getattr(handle, method).remote(arg), timeout=self.timeout_s)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError, ValueError) as err:  # ValueError: no such actor
            if not self.down:
                log.warning("verdict cache owner unreachable (%s: %s); judging goes on without the cache",
                            type(err).__name__, str(err).strip().splitlines()[0][:200] if str(err).strip() else "")
            self.down = type(err).__name__
            return None
        if self.down:
            log.warning("verdict cache owner reachable again; verdicts are cached again")
            self.down = ""
        return result
