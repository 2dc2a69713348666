"""The kit's group-commit batcher, over a batch function that records what it ran."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from services.kit.batcher import Batcher, BatchRetriesExhausted


class Conflict(Exception):
    pass


class Recorder:
    """A batch function: doubles each item; fails as told; records every batch it was given."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail_items: set[int] = set()
        self.conflicts = 0
        self.active_keys: set[int] = set()
        self.overlaps = 0
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> list[int]:
        with self.lock:
            self.batches.append(list(items))
            if self.active_keys & set(items):
                self.overlaps += 1
            self.active_keys |= set(items)
        try:
            time.sleep(self.delay)
            if self.conflicts:
                self.conflicts -= 1
                raise Conflict
            if bad := self.fail_items & set(items):
                raise ValueError(f"bad item {sorted(bad)}")
            return [2 * i for i in items]
        finally:
            with self.lock:
                self.active_keys -= set(items)


def batcher(fn: Recorder, **kw: object) -> Batcher[int, int]:
    return Batcher("test-batcher", fn, service="svc", retry_on=(Conflict,), **kw)  # type: ignore[arg-type]


async def test_concurrent_items_share_batches_and_each_gets_its_own_result():
    fn = Recorder(delay=0.02)
    b = batcher(fn, max_batch=16)
    b.start()
    try:
        results = await asyncio.gather(*(b.submit(i) for i in range(100)))
    finally:
        b.stop()
    assert results == [2 * i for i in range(100)]
    assert len(fn.batches) < 50, "items were grouped"
    assert max(len(batch) for batch in fn.batches) <= 16


async def test_items_with_the_same_key_never_share_a_batch_nor_run_at_once():
    fn = Recorder(delay=0.01)
    b = batcher(fn, key=str, threads=3)
    b.start()
    try:
        results = await asyncio.gather(*(b.submit(i % 3) for i in range(30)))
    finally:
        b.stop()
    assert results == [2 * (i % 3) for i in range(30)]
    for batch in fn.batches:
        assert len(set(batch)) == len(batch)
    assert fn.overlaps == 0, "no key ran in two batches at the same time"


async def test_a_batch_raising_a_retry_exception_is_run_again_and_after_commit_follows_success():
    fn = Recorder()
    fn.conflicts = 2
    commits: list[int] = []
    b = batcher(fn, after_commit=lambda: commits.append(len(fn.batches)))
    b.start()
    try:
        assert await b.submit(5) == 10
    finally:
        b.stop()
    assert fn.batches == [[5], [5], [5]]
    assert commits == [3], "after_commit ran once, after the run that succeeded"


async def test_an_item_whose_conflict_never_resolves_gets_an_error():
    fn = Recorder()
    fn.conflicts = 100
    b = batcher(fn, retries=2)
    b.start()
    try:
        with pytest.raises(BatchRetriesExhausted):
            await b.submit(1)
    finally:
        b.stop()


async def test_a_failing_batch_is_retried_item_by_item_so_one_bad_item_fails_alone():
    fn = Recorder(delay=0.05)
    fn.fail_items = {3}
    commits: list[None] = []
    b = batcher(fn, after_commit=lambda: commits.append(None))
    b.start()
    try:
        blocker = asyncio.ensure_future(b.submit(100))  # holds the worker while the rest queue up
        await asyncio.sleep(0.01)
        results = await asyncio.gather(*(b.submit(i) for i in range(6)), return_exceptions=True)
        await blocker
    finally:
        b.stop()
    assert [r if isinstance(r, int) else "error" for r in results] == [0, 2, 4, "error", 8, 10]
    assert isinstance(results[3], ValueError)
    assert [0, 1, 2, 3, 4, 5] in fn.batches, "first tried as one batch"
    assert len(commits) == 1 + 5, "the blocker, then each good item alone"


def test_submit_and_wait_serves_a_thread_without_an_event_loop():
    fn = Recorder()
    b = batcher(fn)
    b.start()
    try:
        assert b.submit_and_wait([1, 2, 3]) == [2, 4, 6]
    finally:
        b.stop()


async def test_stop_finishes_what_is_queued_and_then_refuses_new_items():
    fn = Recorder(delay=0.05)
    b = batcher(fn, max_batch=1)
    b.start()
    pending = [asyncio.ensure_future(b.submit(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    await asyncio.to_thread(b.stop)
    assert await asyncio.gather(*pending) == [0, 2, 4, 6, 8]
    with pytest.raises(RuntimeError, match="shutting down"):
        await b.submit(1)


def _stage(name: str, batcher_name: str) -> tuple[float, float]:
    """(count, sum) of one of the batcher's stage histograms for `batcher_name`."""
    from prometheus_client import REGISTRY
    labels = {"service": "svc", "batcher": batcher_name}
    return (REGISTRY.get_sample_value(f"{name}_count", labels) or 0.0,
            REGISTRY.get_sample_value(f"{name}_sum", labels) or 0.0)


async def test_where_an_items_time_goes_is_measured_per_stage():
    fn = Recorder(delay=0.03)
    b = Batcher("stages-batcher", fn, service="svc", max_batch=4)
    before = {s: _stage(s, "stages-batcher") for s in
              ("batcher_queue_wait_seconds", "batcher_run_seconds", "batcher_handback_seconds")}
    b.start()
    try:
        await asyncio.gather(*(b.submit(i) for i in range(8)))
    finally:
        b.stop()
    waits, runs, handbacks = (
        tuple(a - z for a, z in zip(_stage(s, "stages-batcher"), before[s], strict=True))
        for s in ("batcher_queue_wait_seconds", "batcher_run_seconds", "batcher_handback_seconds"))
    assert waits[0] == 8, "one queue wait per item"
    assert runs[0] == len(fn.batches) and runs[1] >= 0.03 * len(fn.batches), "each run timed, sleep included"
    assert handbacks[0] == len(fn.batches), "one hand-back per batch (one event loop)"
    # 8 items, batches of at most 4 that take 30 ms: the later items waited for an earlier batch to finish.
    assert waits[1] >= 0.03
