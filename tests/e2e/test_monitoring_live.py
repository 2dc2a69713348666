"""connects, a real Prometheus with the project's config and rules, and the simulator: every panel and alert is live.

Every query of the overview and connects dashboards returns data after a short simulated run (or its panel
says why it may be empty), every alert expression evaluates and every series it reads exists (or is listed
below with the reason), and `make snapshot` of the run draws no empty panel but the documented ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from deploy.grafana import snapshot
from deploy.grafana.dashboards import CONNECTS, OVERVIEW
from deploy.grafana.planned import PLANNED_METRICS, planned_series
from deploy.run_suite import scrape_config
from tests.conftest import ROOT
from tests.e2e.conftest import free_port
from tests.unit.deploy.test_monitoring import alert_rules, metric_names

pytestmark = pytest.mark.e2e
SIM_SECONDS = 25
# Series an alert reads that a healthy connects-only run does not have, and why (none: consumers export
# consumer_dlq_total from 0 when they start, so the first dead letter is an increase() the alert sees).
ABSENT_WHEN_HEALTHY: dict[str, str] = {}


def api(port: int, path: str, **params: object) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=20) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return body["data"]["result"] if isinstance(body["data"], dict) and "result" in body["data"] else body["data"]


@pytest.fixture(scope="module")
def live(launch, tmp_path_factory, secret_file, kafka_bootstrap):
    """connects + Prometheus (1s scrapes and rule evaluations) + the simulator's connects flows for a while."""
    connects = launch("connects")
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: deploy/local/prometheus.sh install (make test does it)"
    work = tmp_path_factory.mktemp("prom")
    config = scrape_config({"connects": connects.metrics_port})
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prom = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("wb"))
    try:
        deadline = time.monotonic() + 30
        while not _target_up(port):
            assert time.monotonic() < deadline, (work / "prometheus.log").read_text()[-2000:]
            time.sleep(0.5)
        env = {**os.environ, "ADSMON_CONNECTS_GRPC_PORT": str(connects.grpc_port),
               "ADSMON_AUTH_SECRET_FILE": str(secret_file), "ADSMON_KAFKA_BOOTSTRAP": kafka_bootstrap}
        sim = subprocess.run([sys.executable, "-m", "deploy.sim", "--rate", "40", "--duration", str(SIM_SECONDS),
                              "--seed", "11", "--services", "connects,marketplace", "--accounts", "60"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=SIM_SECONDS + 60)
        time.sleep(3)  # the last scrapes and rule evaluations
        yield port, sim
    finally:
        prom.terminate()
        prom.wait(timeout=15)


def _target_up(port: int) -> bool:
    try:
        return any(t["health"] == "up" for t in api(port, "targets")["activeTargets"])
    except OSError:
        return False


def test_the_simulator_moves_connects_with_refusals_but_no_errors(live):
    _, sim = live
    assert sim.returncode == 0, sim.stdout[-3000:] + sim.stderr[-3000:]
    last = [line for line in sim.stdout.splitlines() if "events/s" in line][-1]
    assert int(re.search(r"errors (\d+)", last).group(1)) == 0
    assert int(re.search(r"Connects moved (\d+)", last).group(1)) > 0
    assert int(re.search(r"ok (\d+)", last).group(1)) > SIM_SECONDS * 10


@pytest.mark.parametrize("board", [OVERVIEW, CONNECTS], ids=lambda b: b.uid)
def test_every_panel_query_returns_data_or_its_panel_says_why_not(live, board):
    port, _ = live
    end = time.time()
    blank = []
    for panel in board.panels():
        results = [api(port, "query_range", query=q.concrete(rate_interval="10s", range_="60s"), start=end - 60,
                       end=end, step=2) for q in panel.queries]
        if not any(results):
            blank.append(panel)
    undocumented = [p.title for p in blank if not p.may_be_empty]
    assert not undocumented, f"panels without data and without a reason: {undocumented}"


def test_every_alert_expression_runs_and_reads_series_that_exist(live):
    port, _ = live
    # The run is connects-only: ads' and billing's series (pending or shipped) are not scraped here.
    not_running = {n for s in PLANNED_METRICS for n in planned_series(s)}
    for rule in alert_rules():
        api(port, "query", query=rule["expr"])  # evaluates (status success)
        for name in metric_names(rule["expr"]) - not_running - set(ABSENT_WHEN_HEALTHY):
            assert api(port, "query", query=f"count({name})"), f"{rule['alert']}: no {name} series"
    # Not asserted: nothing firing. On this shared 2-core machine a burst of calls over 250 ms can trip a
    # latency burn alert whose 1d window holds only this test's 30 seconds (test_prometheus_scrape checks
    # that an idle suite fires nothing).
    loaded = {r["name"] for g in api(port, "rules")["groups"] for r in g["rules"]}
    assert {r["alert"] for r in alert_rules()} <= loaded


def test_the_snapshot_of_the_run_draws_no_empty_panel_but_documented_ones(live, tmp_path):
    port, _ = live
    out = tmp_path / "snapshot.png"
    assert snapshot.main(["--prometheus", f"http://127.0.0.1:{port}", "--minutes", "1",
                          "--dashboards", "overview,connects", "--out", str(out)]) == 0
    assert out.stat().st_size > 50_000
    summary = json.loads(out.with_suffix(".json").read_text())
    documented = {p.title for b in (OVERVIEW, CONNECTS) for p in b.panels() if p.may_be_empty}
    empty = [(uid, title) for uid, panels in summary.items() for title, n in panels.items() if n == 0]
    assert [e for e in empty if e[1] not in documented] == []
    assert sum(len(p) for p in summary.values()) == len(OVERVIEW.panels()) + len(CONNECTS.panels())
