"""Fault tests: each under steady seeded simulator traffic, each ending with the checker at zero discrepancies.

Run by `make chaos` (ADSMON_CHAOS=1) on the private suite of tests/chaos/conftest.py.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.chaos.conftest import Suite, run_fault

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


def test_sigkill_of_each_service_in_turn_loses_and_duplicates_nothing(chaos_suite: Suite) -> None:
    def kill_each() -> None:
        for name in ("connects", "ads", "billing"):
            child = chaos_suite.child(name)
            assert child.proc is not None
            os.kill(child.proc.pid, signal.SIGKILL)
            time.sleep(1.0)
            chaos_suite.wait_serving()  # the supervisor restarted it

    report = run_fault(chaos_suite, 11, kill_each)
    assert sum(c.restarts for c in chaos_suite.supervisor.children) >= 3
    assert report.count == 0, report.text()


def test_kafka_broker_stopped_for_30_seconds_loses_and_duplicates_nothing(chaos_suite: Suite) -> None:
    def stop_kafka() -> None:
        chaos_suite.infra.script("kafka", "stop")
        time.sleep(30)
        chaos_suite.infra.script("kafka", "start")

    report = run_fault(chaos_suite, 12, stop_kafka, duration=50)
    assert report.count == 0, report.text()


def test_postgresql_restart_loses_and_duplicates_nothing(chaos_suite: Suite) -> None:
    report = run_fault(chaos_suite, 13, lambda: chaos_suite.infra.script("postgres", "restart"))
    assert report.count == 0, report.text()


def test_a_slow_then_failing_connects_service_loses_and_duplicates_nothing(chaos_suite: Suite) -> None:
    """SIGSTOP/SIGCONT the ledger: short pauses (slow answers), then one past every caller's deadline."""
    def slow_then_failing() -> None:
        child = chaos_suite.child("connects")
        assert child.proc is not None
        for pause in (1.5, 1.5, 1.5, 15.0):
            os.kill(child.proc.pid, signal.SIGSTOP)
            time.sleep(pause)
            os.kill(child.proc.pid, signal.SIGCONT)
            time.sleep(2.0)

    report = run_fault(chaos_suite, 14, slow_then_failing)
    assert report.count == 0, report.text()
