"""`make run`'s supervisor: restart backoff, console messages, the Prometheus config it writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deploy import run_suite
from deploy.run_suite import Child, Supervisor, exit_text, scrape_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(run_suite.time, "monotonic", fake)
    return fake


def crashing_child(tmp_path: Path) -> Child:
    return Child("connects", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], {},
                 tmp_path / "connects.log", ready=lambda: False, address="grpc 127.0.0.1:1")


def wait_exit(child: Child) -> None:
    assert child.proc is not None
    child.proc.wait(timeout=20)


def test_exit_text_names_the_signal_or_the_code():
    assert exit_text(-9) == "killed by SIGKILL"
    assert exit_text(3) == "exited with code 3"


def test_a_child_that_keeps_crashing_is_restarted_with_doubling_delays_and_the_console_says_so(tmp_path, clock,
                                                                                                capsys):
    child = crashing_child(tmp_path)
    sup = Supervisor([child])
    child.start()
    delays = []
    for _ in range(4):
        wait_exit(child)
        sup.tick()  # notices the exit, schedules the restart
        assert child.restart_at is not None
        delays.append(child.restart_at - clock.now)
        clock.now = child.restart_at
        sup.tick()  # restarts
        assert child.restart_at is None
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert child.restarts == 4
    out = capsys.readouterr().out
    assert "connects exited with code 3 after 0s up; restarting in 1s (restart 1)" in out
    assert "boom" in out  # the last lines of its log
    assert "connects restarted (pid" in out


def test_a_child_that_ran_a_minute_before_dying_is_restarted_after_the_first_delay_again(tmp_path, clock):
    child = crashing_child(tmp_path)
    sup = Supervisor([child])
    child.failures = 5  # it had crashed often before
    child.start()
    wait_exit(child)
    clock.now += run_suite.STABLE_AFTER
    sup.tick()
    assert child.restart_at == clock.now + run_suite.BACKOFF_INITIAL


def test_the_backoff_is_capped(tmp_path, clock):
    child = crashing_child(tmp_path)
    child.failures = 30
    child.start()
    wait_exit(child)
    Supervisor([child]).tick()
    assert child.restart_at == clock.now + run_suite.BACKOFF_MAX


def test_prometheus_scrapes_the_given_metrics_ports_with_the_project_rules():
    config = scrape_config({"connects": 19101, "billing": 19103})
    jobs = {j["job_name"]: j["static_configs"][0] for j in config["scrape_configs"]}  # type: ignore[index]
    assert jobs == {"adsmon-connects": {"targets": ["127.0.0.1:19101"], "labels": {"service": "connects"}},
                    "adsmon-billing": {"targets": ["127.0.0.1:19103"], "labels": {"service": "billing"}}}
    rules = config["rule_files"]
    assert [Path(r).name for r in rules] == ["slo.yml", "alerts.yml"]  # type: ignore[union-attr]
    assert all(Path(r).is_absolute() and Path(r).is_file() for r in rules)  # type: ignore[union-attr]
