"""Group commit: commands from many RPCs share one database transaction.

RPC handlers `submit` commands; worker threads take up to `max_batch`
pending commands at a time, run them through `handlers.execute` in one unit
of work and commit once, then hand each command its own outcome. While a
batch commits, the next one fills up, so throughput grows with load instead
of being capped by one fsync per command. A batch that fails for an
unexpected reason is retried command by command, so one bad command cannot
fail its neighbours; a RequestIdConflict (a duplicate committed by another
process meanwhile) retries the batch, whose replays then answer it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from services.connects.service_layer import handlers
from services.connects.service_layer.handlers import Envelope, Metrics, Outcome
from services.connects.service_layer.unit_of_work import AbstractLedgerUnitOfWork, RequestIdConflict

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    envelope: Envelope
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome]
    key: str = field(default="")


def _deliver(fut: asyncio.Future[Outcome], outcome: Outcome | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(outcome)  # type: ignore[arg-type]


def _deliver_all(results: list[tuple[asyncio.Future[Outcome], Outcome]]) -> None:
    for fut, outcome in results:
        if not fut.done():
            fut.set_result(outcome)


def _deliver_batch(batch: list[_Pending], outcomes: list[Outcome]) -> None:
    """Hand a committed batch its outcomes: one wake-up per event loop, not one per command."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Outcome], Outcome]]] = {}
    for p, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(p.loop, []).append((p.future, outcome))
    for loop, results in by_loop.items():
        loop.call_soon_threadsafe(_deliver_all, results)


class Batcher:
    """Thread-backed group-commit queue in front of `handlers.execute`."""

    def __init__(self, uow_factory: Callable[[], AbstractLedgerUnitOfWork], clock: Callable[[], datetime],
                 metrics: Metrics, *, max_batch: int = 256, workers: int = 1, conflict_retries: int = 3,
                 on_commit: Callable[[], None] | None = None) -> None:
        self._on_commit = on_commit
        self._uow_factory = uow_factory
        self._clock = clock
        self._metrics = metrics
        self._max_batch = max_batch
        self._conflict_retries = conflict_retries
        self._queue: deque[_Pending] = deque()
        self._in_flight: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, name=f"connects-batch-{i}", daemon=True)
                         for i in range(workers)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Finish what is queued, then stop the workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=30)

    async def submit(self, envelope: Envelope) -> Outcome:
        loop = asyncio.get_running_loop()
        pending = _Pending(envelope, loop, loop.create_future(), getattr(envelope.command, "request_id", ""))
        with self._cond:
            if self._stopping:
                raise RuntimeError("the ledger is shutting down")
            self._queue.append(pending)
            self._cond.notify()
        return await pending.future

    def _take(self) -> list[_Pending] | None:
        with self._cond:
            while True:
                if self._queue:
                    batch: list[_Pending] = []
                    skipped: list[_Pending] = []
                    keys: set[str] = set()
                    while self._queue and len(batch) < self._max_batch:
                        item = self._queue.popleft()
                        # The same request_id twice at once: the later one waits for the
                        # earlier to commit, then gets its stored answer.
                        if item.key and (item.key in keys or item.key in self._in_flight):
                            skipped.append(item)
                            continue
                        keys.add(item.key)
                        batch.append(item)
                    self._queue.extendleft(reversed(skipped))
                    if batch:
                        self._in_flight |= keys
                        return batch
                if self._stopping and not self._queue:
                    return None
                self._cond.wait(timeout=0.05)

    def _done(self, batch: list[_Pending]) -> None:
        with self._cond:
            self._in_flight -= {p.key for p in batch}
            self._cond.notify_all()

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._process(batch)
            finally:
                self._done(batch)

    def _committed(self) -> None:
        if self._on_commit is not None:
            self._on_commit()

    def _process(self, batch: list[_Pending]) -> None:
        envelopes = [p.envelope for p in batch]
        for attempt in range(self._conflict_retries + 1):
            try:
                outcomes = handlers.execute(self._uow_factory(), envelopes, self._clock(), self._metrics)
            except RequestIdConflict:
                if attempt < self._conflict_retries:
                    continue
                break
            except Exception as exc:
                if len(batch) == 1:
                    log.warning("ledger command failed: %s", type(exc).__name__)
                    batch[0].loop.call_soon_threadsafe(_deliver, batch[0].future, None, exc)
                    return
                log.warning("batch of %d failed (%s); retrying one by one", len(batch), type(exc).__name__)
                break
            self._committed()
            _deliver_batch(batch, outcomes)
            return
        for p in batch:
            self._process_single(p)

    def _process_single(self, p: _Pending) -> None:
        for attempt in range(self._conflict_retries + 1):
            try:
                (outcome,) = handlers.execute(self._uow_factory(), [p.envelope], self._clock(), self._metrics)
            except RequestIdConflict:
                if attempt < self._conflict_retries:
                    continue
                exc: BaseException = RuntimeError("request id conflict did not resolve")
            except Exception as e:
                exc = e
            else:
                self._committed()
                p.loop.call_soon_threadsafe(_deliver, p.future, outcome, None)
                return
            p.loop.call_soon_threadsafe(_deliver, p.future, None, exc)
            return
