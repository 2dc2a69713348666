"""Group commit: items from many callers share one run of a batch function (one database transaction).

Callers `submit` items (awaitable, from an event loop) or `submit_and_wait`
(blocking, from another thread); the batcher's worker thread(s) take up to
`max_batch` pending items at a time and call `run_batch(items)`, which must
return one result per item, in order. While one batch commits the next one
fills up, so throughput grows with load instead of being capped by one fsync
per item.

- Items with the same non-empty `key` (a request id) never share a batch or
  run at the same time: the later waits for the earlier to commit (and then,
  typically, gets its stored answer).
- A batch that raises one of `retry_on` (e.g. a duplicate committed by
  another process meanwhile) is run again, up to `retries` times.
- A batch that raises anything else is retried item by item, so one bad item
  cannot fail its neighbours; an item that fails alone gets the exception.
- `after_commit()` runs after every successful run (e.g. wake the outbox relay).
- `stop()` refuses new items, finishes what is queued, then ends the threads.
- Where an item's time goes is exported as three histograms labelled by service and batcher:
  `batcher_queue_wait_seconds` (queued until a worker takes it into a batch; per item),
  `batcher_run_seconds` (one run of `run_batch`, database round trips and commit included; per batch),
  `batcher_handback_seconds` (results handed to the event loop until the loop runs the hand-back, i.e.
  how long a ready reply waits for the loop or the GIL; per batch and loop).

Wiring (connects):

    batcher = Batcher("ledger-batcher", lambda envs: handlers.execute(uow_factory(), envs, clock(), metrics),
                      service="connects", key=request_id_of, retry_on=(RequestIdConflict,),
                      after_commit=relay.wake, max_batch=256)
    outcome = await batcher.submit(envelope)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Histogram

from services.kit.worker import Worker

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_STAGE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LABELS = ("service", "batcher")
queue_wait_seconds = Histogram("batcher_queue_wait_seconds", "Time an item waited in a group-commit queue "
                               "before a worker took it into a batch.", _LABELS, buckets=_STAGE_BUCKETS)
run_seconds = Histogram("batcher_run_seconds", "Time of one batch run (the batch function: its database "
                        "round trips and commit).", _LABELS, buckets=_STAGE_BUCKETS)
handback_seconds = Histogram("batcher_handback_seconds", "Time from a batch's results being ready until the "
                             "caller's event loop ran their hand-back.", _LABELS, buckets=_STAGE_BUCKETS)

@dataclass
class _Pending(Generic[T, R]):
    item: T
    key: str
    loop: asyncio.AbstractEventLoop | None  # None: a blocking caller waiting on a concurrent future
    future: asyncio.Future[R] | concurrent.futures.Future[R]
    queued: float  # time.monotonic() when it was queued


def _set_result(fut: asyncio.Future[R] | concurrent.futures.Future[R], result: R) -> None:
    if not fut.done():
        fut.set_result(result)


def _set_exception(fut: asyncio.Future[R] | concurrent.futures.Future[R], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _set_results(results: list[tuple[asyncio.Future[R], R]], ready: float, handback: Histogram) -> None:
    handback.observe(time.monotonic() - ready)
    for fut, result in results:
        _set_result(fut, result)


class BatchRetriesExhausted(RuntimeError):
    """An item kept raising one of `retry_on` (its conflict did not resolve)."""


class Batcher(Worker, Generic[T, R]):
    """A group-commit queue in front of `run_batch`, drained by `threads` worker threads."""

    def __init__(self, name: str, run_batch: Callable[[Sequence[T]], Sequence[R]], *, service: str,
                 key: Callable[[T], str] | None = None, max_batch: int = 256, threads: int = 1,
                 retry_on: tuple[type[Exception], ...] = (), retries: int = 3,
                 after_commit: Callable[[], None] | None = None, idle_seconds: float = 1.0) -> None:
        super().__init__(name, service=service, interval=0.0, threads=threads, stop_timeout=30.0)
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self._key = key
        self._retry_on = retry_on
        self._retries = retries
        self._after_commit = after_commit
        self._idle_seconds = idle_seconds
        self._queue: deque[_Pending[T, R]] = deque()
        self._in_flight: set[str] = set()
        self._cond = threading.Condition()
        self._queue_wait = queue_wait_seconds.labels(service, name)
        self._run = run_seconds.labels(service, name)
        self._handback = handback_seconds.labels(service, name)

    # -- callers -----------------------------------------------------------------------------

    async def submit(self, item: T) -> R:
        """Queue `item` and await its result (or its exception)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._enqueue([_Pending(item, self._key(item) if self._key else "", loop, fut, time.monotonic())])
        return await fut

    def submit_and_wait(self, items: Sequence[T], timeout: float | None = None) -> list[R]:
        """Queue `items` from a thread that is not an event loop and block until each has its result.

        Raises the first item's exception, if any (after every item is settled).
        """
        futures: list[concurrent.futures.Future[R]] = [concurrent.futures.Future() for _ in items]
        now = time.monotonic()
        self._enqueue([_Pending(item, self._key(item) if self._key else "", None, fut, now)
                       for item, fut in zip(items, futures, strict=True)])
        concurrent.futures.wait(futures, timeout)
        return [fut.result(timeout=0) for fut in futures]

    def _enqueue(self, pending: list[_Pending[T, R]]) -> None:
        with self._cond:
            if self.stopping:
                raise RuntimeError(f"{self.name} is shutting down")
            self._queue.extend(pending)
            self._cond.notify(len(pending))

    # -- the worker (kit.worker.Worker) ------------------------------------------------------

    def run_once(self) -> bool:
        """Run one batch if any is queued within `idle_seconds`; True if one ran."""
        batch = self._take()
        if batch is None:
            return False
        self._run_and_release(batch)
        return True

    def stop(self, timeout: float | None = None) -> None:
        with self._cond:
            self._stopping.set()
            self._cond.notify_all()
        super().stop(timeout)

    def teardown(self) -> None:
        """Finish what is queued (nothing new is accepted once stopping)."""
        while (batch := self._take()) is not None:
            self._run_and_release(batch)

    def _take(self) -> list[_Pending[T, R]] | None:
        """Up to max_batch items with distinct keys; None when idle for idle_seconds, or stopping and empty."""
        deadline = time.monotonic() + self._idle_seconds
        with self._cond:
            while True:
                if self._queue:
                    batch = self._pick()
                    if batch:
                        return batch
                    self._cond.wait(0.05)  # every queued key is in flight: wait for a release
                    continue
                remaining = deadline - time.monotonic()
                if self.stopping or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def _pick(self) -> list[_Pending[T, R]]:
        batch: list[_Pending[T, R]] = []
        skipped: list[_Pending[T, R]] = []
        keys: set[str] = set()
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            if item.key and (item.key in keys or item.key in self._in_flight):
                skipped.append(item)
                continue
            keys.add(item.key)
            batch.append(item)
        self._queue.extendleft(reversed(skipped))
        self._in_flight |= keys
        return batch

    def _run_and_release(self, batch: list[_Pending[T, R]]) -> None:
        taken = time.monotonic()
        for p in batch:
            self._queue_wait.observe(taken - p.queued)
        try:
            self._process(batch)
        finally:
            with self._cond:
                self._in_flight -= {p.key for p in batch}
                self._cond.notify_all()

    def _committed(self) -> None:
        if self._after_commit is not None:
            self._after_commit()

    def _process(self, batch: list[_Pending[T, R]]) -> None:
        items = [p.item for p in batch]
        for attempt in range(self._retries + 1):
            started = time.monotonic()
            try:
                results = self.run_batch(items)
            except self._retry_on:
                if attempt < self._retries:
                    continue
                break
            except Exception as exc:
                if len(batch) == 1:
                    log.warning("%s: item failed: %s", self.name, type(exc).__name__)
                    self._fail(batch[0], exc)
                    return
                log.warning("%s: batch of %d failed (%s); retrying one by one", self.name, len(batch),
                            type(exc).__name__)
                break
            self._run.observe(time.monotonic() - started)
            self._committed()
            self._deliver_batch(batch, results)
            return
        for p in batch:
            self._process_single(p)

    def _process_single(self, p: _Pending[T, R]) -> None:
        exc: BaseException = BatchRetriesExhausted(f"{self.name}: retried {self._retries} times")
        for attempt in range(self._retries + 1):
            try:
                (result,) = self.run_batch([p.item])
            except self._retry_on:
                if attempt < self._retries:
                    continue
            except Exception as e:
                exc = e
            else:
                self._committed()
                self._deliver(p, result)
                return
            break
        self._fail(p, exc)

    @staticmethod
    def _fail(p: _Pending[T, R], exc: BaseException) -> None:
        if p.loop is None:
            _set_exception(p.future, exc)
        else:
            p.loop.call_soon_threadsafe(_set_exception, p.future, exc)

    @staticmethod
    def _deliver(p: _Pending[T, R], result: R) -> None:
        if p.loop is None:
            _set_result(p.future, result)
        else:
            p.loop.call_soon_threadsafe(_set_result, p.future, result)

    def _deliver_batch(self, batch: list[_Pending[T, R]], results: Sequence[R]) -> None:
        """Hand a committed batch its results: one wake-up per event loop, not one per item."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], R]]] = {}
        for p, result in zip(batch, results, strict=True):
            if p.loop is not None and isinstance(p.future, asyncio.Future):
                by_loop.setdefault(p.loop, []).append((p.future, result))
            else:
                _set_result(p.future, result)
        ready = time.monotonic()
        for loop, pairs in by_loop.items():
            loop.call_soon_threadsafe(_set_results, pairs, ready, self._handback)
