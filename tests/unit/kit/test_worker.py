"""The kit's one background-worker base: loop, wake-up, backoff, metrics, threads, stop."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.kit.worker import Stopped, Worker


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Scripted(Worker):
    """Runs `script` results in turn (an exception is raised); then returns False forever."""

    def __init__(self, script: list[Any], **kw: Any) -> None:
        kw.setdefault("interval", 30.0)
        super().__init__(kw.pop("name", "scripted"), service=f"svc-{uuid.uuid4().hex[:8]}", **kw)
        self.script = list(script)
        self.runs = 0
        self.errors: list[Exception] = []
        self.events: list[str] = []

    def setup(self) -> None:
        self.events.append("setup")

    def teardown(self) -> None:
        self.events.append("teardown")

    def on_error(self, exc: Exception) -> None:
        self.errors.append(exc)

    def run_once(self) -> Any:
        self.runs += 1
        step = self.script.pop(0) if self.script else False
        if isinstance(step, Exception):
            raise step
        return step


def test_a_truthy_run_goes_again_at_once_and_a_falsy_one_waits_for_the_interval_or_a_wake():
    worker = Scripted([True, True, False], interval=30.0)
    worker.start()
    try:
        assert wait_until(lambda: worker.runs == 3)
        time.sleep(0.2)
        assert worker.runs == 3, "a falsy run waits for the interval"
        worker.wake()
        assert wait_until(lambda: worker.runs == 4), "wake() runs it before the interval ends"
    finally:
        worker.stop()
    assert worker.events == ["setup", "teardown"]
    assert not worker.running


def test_a_failing_run_is_counted_backs_off_and_the_loop_survives_it():
    worker = Scripted([RuntimeError("db down"), RuntimeError("still down"), True], interval=30.0,
                      error_backoff_initial=0.05, error_backoff_max=0.1)
    started = time.monotonic()
    worker.start()
    try:
        assert wait_until(lambda: worker.runs == 4)
        assert time.monotonic() - started >= 0.05 + 0.1 - 0.01, "each failure waited its backoff"
    finally:
        worker.stop()
    labels = {"service": worker.service, "worker": "scripted"}
    assert metric("worker_runs_total", **labels, outcome="error") == 2
    assert metric("worker_runs_total", **labels, outcome="ok") == 2
    assert [str(e) for e in worker.errors] == ["db down", "still down"]
    assert worker.consecutive_failures == 0
    assert metric("worker_last_success_timestamp_seconds", **labels) == pytest.approx(time.time(), abs=5)


def test_worker_up_is_one_while_the_loop_runs_and_zero_after_stop():
    worker = Scripted([])
    labels = {"service": worker.service, "worker": "scripted"}
    worker.start()
    try:
        assert wait_until(lambda: metric("worker_up", **labels) == 1)
        assert worker.healthy() and worker.healthy(max_silence=60)
    finally:
        worker.stop()
    assert metric("worker_up", **labels) == 0
    assert not worker.healthy()


def test_has_more_decides_whether_to_go_again_at_once():
    class Counting(Scripted):
        def has_more(self, result: Any) -> bool:
            return bool(result >= 10)

    worker = Counting([10, 3, 10], interval=30.0)
    worker.start()
    try:
        assert wait_until(lambda: worker.runs == 2)
        time.sleep(0.2)
        assert worker.runs == 2, "3 < 10: not a full batch, so it waits"
    finally:
        worker.stop()


def test_stopped_raised_by_a_run_ends_the_loop_without_counting_an_error():
    worker = Scripted([Stopped()])
    worker.start()
    assert wait_until(lambda: not worker.running)
    worker.stop()
    assert metric("worker_runs_total", service=worker.service, worker="scripted", outcome="error") == 0
    assert worker.errors == [] and worker.events == ["setup", "teardown"]


def test_several_threads_run_the_loop_at_once_and_stop_together():
    gate = threading.Barrier(3, timeout=5)

    class Parallel(Scripted):
        def run_once(self) -> Any:
            gate.wait()  # passes only when all three threads are inside a run at the same time
            return super().run_once()

    worker = Parallel([], threads=3)
    worker.start()
    try:
        assert wait_until(lambda: worker.runs >= 3)
    finally:
        worker.stop()
    assert worker.events.count("setup") == 3 and worker.events.count("teardown") == 3
    assert metric("worker_up", service=worker.service, worker="scripted") == 0


def test_stop_is_safe_without_start_and_a_worker_cannot_start_twice():
    worker = Scripted([])
    worker.stop()
    worker.start()
    try:
        with pytest.raises(RuntimeError):
            worker.start()
    finally:
        worker.stop()
        worker.stop()
    assert not worker.running
