"""A real Prometheus scrapes the running services; every dashboard query and alert expression runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.conftest import ROOT, unique
from tests.e2e.conftest import free_port
from tests.e2e.test_walking_skeleton import credit
from tests.unit.deploy.test_monitoring import alert_exprs, dashboard_exprs

pytestmark = pytest.mark.e2e


def api(port: int, path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture(scope="module")
def prometheus(suite, tmp_path_factory):
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: deploy/local/prometheus.sh install (make test does it)"
    work = tmp_path_factory.mktemp("prom")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy/prometheus/slo.yml"), str(ROOT / "deploy/prometheus/alerts.yml")],
        "scrape_configs": [
            {"job_name": f"adsmon-{name}",
             "static_configs": [{"targets": [f"127.0.0.1:{svc.metrics_port}"], "labels": {"service": name}}]}
            for name, svc in suite.items()],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("wb"))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                targets = api(port, "targets")["activeTargets"]
                if len(targets) == 3 and all(t["health"] == "up" for t in targets):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"targets not up: {(work / 'prometheus.log').read_text()[-2000:]}")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_every_service_is_scraped_and_up(prometheus):
    result = api(prometheus, "query", query='up{job=~"adsmon-.*"}')["result"]
    assert sorted(r["metric"]["job"] for r in result) == ["adsmon-ads", "adsmon-billing", "adsmon-connects"]
    assert all(r["value"][1] == "1" for r in result)


def test_grpc_series_reach_prometheus_after_a_call(prometheus, suite, auth_secret):
    credit(suite["connects"], auth_secret, unique("req"), unique("acct"), 3)
    query = 'sum(grpc_server_handled_total{job="adsmon-connects",grpc_method="Credit",grpc_code="OK"})'
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        result = api(prometheus, "query", query=query)["result"]
        if result and float(result[0]["value"][1]) >= 1:
            return
        time.sleep(0.5)
    raise AssertionError(f"{query} stayed empty")


def test_every_dashboard_and_alert_query_runs_against_live_data(prometheus):
    time.sleep(2)  # a few scrapes, so rate() has two samples
    for expr in dashboard_exprs() + alert_exprs():
        api(prometheus, "query", query=expr)  # asserts status == success


def test_no_alert_fires_on_a_healthy_suite(prometheus):
    time.sleep(2)
    firing = [a for a in api(prometheus, "alerts")["alerts"] if a["state"] == "firing"]
    assert firing == []
