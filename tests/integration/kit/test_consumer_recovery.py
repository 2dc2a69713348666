"""Consumers recover fast on the real broker: a SIGKILLed consumer's restart resumes within seconds.

Before (kafka-python's 45 s session timeout) the restarted connects jobs consumer sat ~40 s in a
rebalance waiting for the dead member's session to expire; the kit now uses a 10 s session (dynamic
membership) and offers static membership (a restart with the same instance id takes its partitions back).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from services.kit.kafka import make_producer

BOUND_SECONDS = 15.0


class ConsumerProcess:
    def __init__(self, bootstrap: str, topic: str, group: str, instance_id: str) -> None:
        args = [sys.executable, "-m", "tests.integration.kit.consumer_process", bootstrap, topic, group]
        self.proc = subprocess.Popen([*args, *([instance_id] if instance_id else [])], stdout=subprocess.PIPE,
                                     text=True, env=os.environ.copy())
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def wait_for(self, expected: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(expected):
                return line
        raise AssertionError(f"no {expected!r} from the consumer within {timeout} s")


@pytest.fixture
def spawn() -> Iterator[Callable[..., ConsumerProcess]]:
    started: list[ConsumerProcess] = []

    def make(*args: str) -> ConsumerProcess:
        started.append(ConsumerProcess(*args))
        return started[-1]

    yield make
    for consumer in started:
        if consumer.proc.poll() is None:
            consumer.proc.kill()
        consumer.proc.wait(10)


def resume_seconds(kafka: str, topic: str, spawn: Callable[..., ConsumerProcess], instance_id: str) -> float:
    group = f"kit.recovery.{uuid.uuid4().hex[:8]}"
    producer = make_producer(kafka, client_id="recovery-test")
    try:
        first = spawn(kafka, topic, group, instance_id)
        producer.send(topic, b"one").get(10)
        first.wait_for("record one", 60)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        killed = time.monotonic()
        second = spawn(kafka, topic, group, instance_id)
        producer.send(topic, b"two").get(10)
        second.wait_for("record two", 60)
        return time.monotonic() - killed
    finally:
        producer.close(timeout=2)


def test_a_sigkilled_consumer_restarted_with_dynamic_membership_resumes_within_the_bound(kafka, new_topic, spawn):
    seconds = resume_seconds(kafka, new_topic(), spawn, instance_id="")
    print(f"dynamic membership: resumed {seconds:.1f} s after SIGKILL")
    assert seconds < BOUND_SECONDS


def test_a_sigkilled_consumer_restarted_with_its_static_instance_id_resumes_within_seconds(kafka, new_topic, spawn):
    seconds = resume_seconds(kafka, new_topic(), spawn, instance_id=f"member-{uuid.uuid4().hex[:6]}")
    print(f"static membership: resumed {seconds:.1f} s after SIGKILL")
    assert seconds < BOUND_SECONDS


def test_a_stop_during_a_rebalance_returns_within_the_close_timeout(kafka, new_topic, spawn):
    topic, group = new_topic(), f"kit.recovery.{uuid.uuid4().hex[:8]}"
    first = spawn(kafka, topic, group, "")
    first.wait_for("started", 30)
    producer = make_producer(kafka, client_id="recovery-test")
    try:
        producer.send(topic, b"warm").get(10)
        first.wait_for("record warm", 60)
    finally:
        producer.close(timeout=2)
    spawn(kafka, topic, group, "").wait_for("started", 30)  # a second member joins: the group rebalances
    time.sleep(0.5)
    began = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    closed = first.wait_for("closed", 30)
    first.proc.wait(10)
    print(f"stop during a rebalance: {closed}; the process ended {time.monotonic() - began:.1f} s after SIGTERM")
    assert time.monotonic() - began < 10.0
