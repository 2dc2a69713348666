"""Dashboards and alerts: generated from code, valid PromQL, naming metrics the code exports."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "deploy" / "prometheus"
sys.path.insert(0, str(ROOT / "deploy" / "grafana"))
import generate  # noqa: E402

# Every module that defines metrics; importing registers them in the default registry.
METRIC_MODULES = ["services.kit.metrics", "services.kit.outbox", "services.kit.consumer",
                  "services.connects.adapters.metrics"]
METRIC_RE = re.compile(r"\b((?:grpc|outbox|consumer|connects|billing|ads)_[a-z0-9_]+)\b")
LABELS = {"grpc_code", "grpc_method", "grpc_service", "grpc_type"}


def exported_names() -> set[str]:
    for module in METRIC_MODULES:
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"],
                    "gauge": [""], "summary": ["_count", "_sum"]}.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: deploy/local/prometheus.sh install (make test does it)"
    return path


def dashboard_exprs() -> list[str]:
    exprs = []
    for text in generate.render().values():
        for p in json.loads(text)["panels"]:
            exprs += [t["expr"] for t in p.get("targets", [])]
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_committed_dashboards_are_what_the_generator_produces():
    for name, text in generate.render().items():
        committed = (ROOT / "deploy" / "grafana" / "dashboards" / name).read_text()
        assert committed == text, f"{name} is stale: run python deploy/grafana/generate.py"


@pytest.mark.parametrize("source", ["dashboards", "alerts"])
def test_every_metric_named_is_exported_by_the_code(source):
    exprs = dashboard_exprs() if source == "dashboards" else alert_exprs()
    named = {m for e in exprs for m in METRIC_RE.findall(e)} - LABELS
    assert named, "no metric names found: the regex or the files are wrong"
    missing = named - exported_names()
    assert not missing, f"{source} name metrics no module exports: {sorted(missing)}"


def test_every_dashboard_query_parses(tmp_path):
    rules = {"groups": [{"name": "dash", "rules": [
        {"record": f"dashboard:q{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dash_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_alert_rules_are_valid_and_their_unit_tests_pass():
    out = subprocess.run([promtool(), "check", "rules", "alerts.yml"], cwd=PROM, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], cwd=PROM,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]]


def alert_cases() -> list[dict]:
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    return [case for t in tests for case in t.get("alert_rule_test", [])]


@pytest.mark.parametrize("alert", [r["alert"] for r in alert_rules()])
def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not(alert):
    cases = [case for case in alert_cases() if case["alertname"] == alert]
    assert any(case["exp_alerts"] for case in cases), f"no promtool case where {alert} fires"
    assert any(not case["exp_alerts"] for case in cases), f"no promtool case where {alert} stays quiet"


def promtool_test_with(tmp_path: Path, rules: list[dict]) -> subprocess.CompletedProcess[str]:
    """Run alerts_test.yml against a changed copy of the alert rules."""
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump({"groups": [{"name": "changed", "rules": rules}]}))
    (tmp_path / "alerts_test.yml").write_text((PROM / "alerts_test.yml").read_text())
    return subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True,
                          text=True)


@pytest.mark.parametrize("alert", [r["alert"] for r in alert_rules() if "for" in r])
def test_the_unit_tests_fail_if_an_alerts_for_duration_were_dropped(tmp_path, alert):
    """Each alert with a `for:` has a case evaluated while its condition holds but `for:` has not elapsed (and
    one past it): without the `for:` it would fire early and promtool would fail."""
    rules = [{k: v for k, v in r.items() if not (r["alert"] == alert and k == "for")} for r in alert_rules()]
    out = promtool_test_with(tmp_path, rules)
    assert out.returncode != 0, f"dropping {alert}'s for: changes no promtool result"
    assert f"alertname: {alert}" in out.stdout + out.stderr


@pytest.mark.parametrize("alert", [r["alert"] for r in alert_rules()])
def test_the_unit_tests_fail_if_an_alert_never_fired(tmp_path, alert):
    rules = [{**r, "expr": "vector(0) > 1"} if r["alert"] == alert else r for r in alert_rules()]
    out = promtool_test_with(tmp_path, rules)
    assert out.returncode != 0 and f"alertname: {alert}" in out.stdout + out.stderr


def test_every_alert_has_a_runbook_that_exists():
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            runbook = rule["annotations"]["runbook_url"]
            assert (ROOT / runbook).is_file(), f"{rule['alert']}: runbook {runbook} missing"
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_scrape_config_is_valid():
    out = subprocess.run([promtool(), "check", "config", "--syntax-only", "prometheus.yml"], cwd=PROM,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
