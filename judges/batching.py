"""Turn many threads' one-at-a-time requests into batched engine calls.

`judges.pairwise` judges one item at a time (orders, parse, retry), which suits HTTP
judges. A local vLLM engine is fast only when it decodes many prompts together, and it
is not safe to call from several threads. `MicroBatcher` sits between the two: item
threads `submit` their messages and block; one engine thread takes whatever is waiting
(up to `max_batch`), runs it as one batch and hands each thread its own reply.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class MicroBatcher(Generic[Request, Reply]):
    def __init__(self, run_batch: Callable[[Sequence[Request]], Sequence[Reply]], max_batch: int,
                 wait_s: float = 0.02):
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._wait_s = wait_s
        self._queue: queue.Queue[tuple[Request, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="judge-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> Reply:
        """Blocks until the batch holding `request` ran; re-raises the batch's error."""
        future: Future = Future()
        self._queue.put((request, future))
        return future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get(timeout=self._wait_s)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[tuple[Request, Future]]) -> None:
        try:
            replies = self._run_batch([request for request, _ in batch])
            if len(replies) != len(batch):
                raise RuntimeError(f"engine returned {len(replies)} replies for {len(batch)} requests")
        except BaseException as err:  # noqa: BLE001  (delivered to every waiting thread)
            for _, future in batch:
                future.set_exception(err)
            return
        for (_, future), reply in zip(batch, replies):
            future.set_result(reply)
