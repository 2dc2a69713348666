"""One base for every background loop: outbox relay, consumers, batcher, schedulers.

A `Worker` repeats `run_once()` on its own daemon thread until stopped. Each
run's result decides the pause before the next: truthy (there may be more
work) runs again at once, falsy waits `interval` seconds or until `wake()`.
A run that raises is logged, counted and retried after an exponential
backoff; the loop never dies of an exception. Every worker exports the same
three series, so one alert covers them all:

    worker_up{service, worker}                               1 while the loop runs
    worker_runs_total{service, worker, outcome="ok|error"}   runs by outcome
    worker_last_success_timestamp_seconds{service, worker}   unix time of the last ok run

Wiring a scheduler:

    class RenewalScheduler(Worker):
        def __init__(self, ...):
            super().__init__("renewals", service="billing", interval=30.0)
        def run_once(self) -> bool:
            return renew_due_memberships(...) > 0       # more due: go again at once

    components.append(RenewalScheduler(...))            # App starts and stops it

`setup()` and `teardown()` run on the worker's thread before the first and
after the last run (open and close a Kafka client there). `on_error(exc)` runs
after a failed run (e.g. drop a broken client); `has_more(result)` decides
whether to go again at once (default: the result is truthy). A long run that
notices `stopping` raises `Stopped` to end without counting an error. With
`threads=N` the loop runs on N threads (each with its own setup/teardown),
for a queue that several consumers drain. `stop()` is safe to call twice and
from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import Counter, Gauge

from services.kit import backoff

log = logging.getLogger(__name__)

worker_up = Gauge("worker_up", "1 while the background worker's loop is running.", ["service", "worker"])
worker_runs = Counter("worker_runs_total", "Background worker runs by outcome.", ["service", "worker", "outcome"])
worker_last_success = Gauge("worker_last_success_timestamp_seconds",
                            "Unix time of the worker's last successful run (0: none yet).",
                            ["service", "worker"])


class Stopped(Exception):
    """Raised inside `run_once` when the worker is stopping: the run ends, uncounted, and so does the loop."""


class Worker:
    """A background loop on its own thread(s); subclasses implement `run_once`."""

    def __init__(self, name: str, *, service: str, interval: float = 1.0, error_backoff_initial: float = 0.2,
                 error_backoff_max: float = 30.0, stop_timeout: float = 15.0, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError("a worker needs at least one thread")
        self.name = name
        self.service = service
        self.interval = interval
        self.error_backoff_initial = error_backoff_initial
        self.error_backoff_max = error_backoff_max
        self.stop_timeout = stop_timeout
        self.threads = threads
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._live = 0
        self.consecutive_failures = 0
        self.last_success: float | None = None  # time.time() of the last ok run
        self._up = worker_up.labels(service, name)
        self._ok = worker_runs.labels(service, name, "ok")
        self._error = worker_runs.labels(service, name, "error")
        self._last_success = worker_last_success.labels(service, name)

    # -- what subclasses provide -------------------------------------------------------------

    def run_once(self) -> Any:
        """One unit of work. Truthy: run again at once; falsy: wait `interval` (or a `wake()`)."""
        raise NotImplementedError

    def setup(self) -> None:
        """On the worker's thread, before the first run."""

    def teardown(self) -> None:
        """On the worker's thread, after the last run (also when setup failed)."""

    def on_error(self, exc: Exception) -> None:
        """On the worker's thread, after a run raised `exc` and before the backoff."""

    def has_more(self, result: Any) -> bool:
        """Whether `run_once`'s result means more work is waiting (go again without waiting)."""
        return bool(result)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            raise RuntimeError(f"worker {self.name} already started")
        self._stopping.clear()
        suffix = [""] if self.threads == 1 else [f"-{i}" for i in range(self.threads)]
        self._threads = [threading.Thread(target=self._loop, name=f"{self.service}-{self.name}{s}", daemon=True)
                         for s in suffix]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to end after the run in hand, and wait for it (at most `timeout`)."""
        self._stopping.set()
        self._wake.set()
        threads, self._threads = self._threads, []
        limit = self.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        for thread in threads:
            if thread is threading.current_thread():
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("worker %s did not stop within %.1fs", self.name, limit)

    def wake(self) -> None:
        """Run now instead of at the end of the interval (thread-safe; e.g. after a commit)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def healthy(self, max_silence: float | None = None) -> bool:
        """Alive, and (with `max_silence`) succeeded within that many seconds."""
        if not self.running:
            return False
        if max_silence is None:
            return True
        return self.last_success is not None and time.time() - self.last_success <= max_silence

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds` unless stopped; True if the worker is stopping (for long runs)."""
        return self._stopping.wait(seconds)

    # -- the loop ----------------------------------------------------------------------------

    def run_and_record(self) -> Any:
        """One run with its metrics; exceptions propagate (the loop backs off, tests see them)."""
        try:
            result = self.run_once()
        except Stopped:
            raise
        except Exception:
            with self._lock:
                self.consecutive_failures += 1
            self._error.inc()
            raise
        with self._lock:
            failures, self.consecutive_failures = self.consecutive_failures, 0
            self.last_success = time.time()
        if failures:
            log.info("worker %s recovered after %d failed runs", self.name, failures)
        self._ok.inc()
        self._last_success.set(self.last_success)
        return result

    def _loop(self) -> None:
        with self._lock:
            self._live += 1
            self._up.set(1)
        try:
            self.setup()
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    result = self.run_and_record()
                except Stopped:
                    break
                except Exception as exc:
                    self._failed(exc)
                    continue
                if not self.has_more(result):
                    self._wake.wait(self.interval)
        except Exception:
            log.exception("worker %s set-up failed", self.name)
        finally:
            try:
                self.teardown()
            except Exception:
                log.warning("worker %s teardown failed", self.name, exc_info=True)
            with self._lock:
                self._live -= 1
                if not self._live:
                    self._up.set(0)

    def _failed(self, exc: Exception) -> None:
        failures = self.consecutive_failures
        if failures == 1:
            log.warning("worker %s failed, retrying with backoff: %s: %s", self.name,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        else:
            log.debug("worker %s failed again (%d)", self.name, failures, exc_info=True)
        try:
            self.on_error(exc)
        except Exception:
            log.warning("worker %s error hook failed", self.name, exc_info=True)
        self._stopping.wait(backoff.exponential(self.error_backoff_initial, self.error_backoff_max,
                                                max(0, failures - 1)))
