"""Dashboards and alerts: generated from code, valid Grafana models and PromQL, naming what the code exports."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gmodel
from prometheus_client import REGISTRY

from deploy.grafana import generate, planned
from deploy.grafana.dashboards import DASHBOARDS
from deploy.grafana.spec import Dashboard, Query

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "deploy" / "prometheus"
RUNBOOKS = ROOT / "deploy" / "runbooks"
PROVISIONING = ROOT / "deploy" / "docker" / "grafana" / "provisioning"

# Every module that defines metrics; importing registers them in the default registry. Add ads' and billing's
# metrics modules here when they land (and drop the service from deploy/grafana/planned.PENDING).
METRIC_MODULES = ["services.kit.metrics", "services.kit.outbox", "services.kit.consumer", "services.kit.worker",
                  "services.connects.adapters.metrics", "services.ads.adapters.metrics",
                  "services.ads.adapters.promoted_metrics",
                  "services.billing.adapters.metrics", "services.billing.adapters.revenue_metrics"]
TARGET_LABELS = {"job", "instance", "service"}  # added by the scrape config
SELECTOR_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
NAME_RE = re.compile(r"\b((?:grpc|outbox|consumer|connects|billing|ads|worker)_[a-z0-9_]+|adsmon:[a-z0-9_:]+)")


def exported() -> dict[str, set[str]]:
    """series name -> label names, for every series the services' metric modules register."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    series: dict[str, set[str]] = {}
    for collector in list(REGISTRY._collector_to_names):
        labels = set(getattr(collector, "_labelnames", ()))
        kind = getattr(collector, "_type", "")
        for name in REGISTRY._collector_to_names[collector]:
            series[name] = labels | ({"le"} if kind == "histogram" and name.endswith("_bucket") else set())
    return series


def recorded() -> dict[str, set[str]]:
    rules = yaml.safe_load((PROM / "slo.yml").read_text())
    return {r["record"]: {"job"} for g in rules["groups"] for r in g["rules"] if "record" in r}


def strip_strings(expr: str) -> str:
    return re.sub(r'"[^"]*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    bare = GROUPING_RE.sub(" ", MATCHER_RE.sub(" ", strip_strings(expr)))
    return set(NAME_RE.findall(bare))


def unknown_names_and_labels(expr: str, known: dict[str, set[str]]) -> list[str]:
    """Metrics the expression names that `known` lacks, and labels none of its metrics carry."""
    problems = []
    names = metric_names(expr)
    problems += [f"metric {n}" for n in sorted(names - set(known))]
    available = TARGET_LABELS | {label for n in names & set(known) for label in known[n]}
    text = strip_strings(expr)
    for metric, matchers in SELECTOR_RE.findall(text):
        for label in MATCHER_RE.findall(matchers):
            if label not in TARGET_LABELS | known.get(metric, set()) and label != "__name__":
                problems.append(f"label {label} on {metric}")
    for group in GROUPING_RE.findall(text):
        problems += [f"label {label} in by/on ({group})" for label in
                     (x.strip() for x in group.split(",")) if label and label not in available]
    return problems


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: deploy/local/prometheus.sh install (make test-unit does it)"
    return path


def queries(spec: Dashboard, *, planned_only: str | None = None) -> list[Query]:
    return [q for p in spec.panels() if planned_only is None or p.planned == planned_only for q in p.queries]


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r for g in rules["groups"] for r in g["rules"]]


def committed(name: str) -> dict:
    return json.loads((ROOT / "deploy" / "grafana" / "dashboards" / name).read_text())


def test_committed_dashboards_are_what_the_generator_produces():
    files = {p.name for p in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")}
    assert files == set(DASHBOARDS), "a dashboard JSON without a spec (or the reverse)"
    for name, text in generate.render().items():
        assert (ROOT / "deploy" / "grafana" / "dashboards" / name).read_text() == text, \
            f"{name} is stale: run .venv/bin/python -m deploy.grafana.generate"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_json_is_a_grafana_dashboard_model(name):
    data = committed(name)
    model = gmodel.Dashboard.from_json(data)
    # Every key survives the SDK model's round trip: nothing in the JSON is outside Grafana's schema.
    assert json.loads(json.dumps(model, cls=JSONEncoder)) == data
    assert data["uid"] == name.removesuffix(".json") and data["title"]
    for panel in data["panels"]:
        assert panel["type"] in {"row", "timeseries", "stat"}
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        if panel["type"] != "row":
            assert panel["targets"], f"{panel['title']} has no query"
            assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]


def test_every_panel_and_query_uses_the_provisioned_datasource():
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())["datasources"]
    (source,) = [d for d in provisioned if d["type"] == "prometheus"]
    for name in DASHBOARDS:
        for panel in committed(name)["panels"]:
            if panel["type"] == "row":
                continue
            refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
            assert all(r == {"type": "prometheus", "uid": source["uid"]} for r in refs), (name, panel["title"])


def test_dashboards_are_provisioned_from_the_generated_directory():
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "adsmon.yaml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards/adsmon"]
    compose = (ROOT / "deploy" / "compose.yaml").read_text()
    assert "./grafana/dashboards:/var/lib/grafana/dashboards/adsmon" in compose


def test_no_duplicate_panel_ids_or_dashboard_uids():
    uids = [committed(n)["uid"] for n in DASHBOARDS]
    assert len(uids) == len(set(uids))
    for name in DASHBOARDS:
        ids = [p["id"] for p in committed(name)["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"


def test_every_panel_documents_a_description_or_legend_and_planned_panels_name_their_service():
    for spec in DASHBOARDS.values():
        for panel in spec.panels():
            assert panel.planned in {"", *planned.PLANNED_METRICS}, panel.title
            assert all(q.legend for q in panel.queries), f"{panel.title}: a query without a legend"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboards_name_only_metrics_and_labels_the_services_export(name):
    known = exported() | recorded()
    checked = 0
    for panel in DASHBOARDS[name].panels():
        if panel.planned in planned.PENDING:
            continue  # checked against the planned catalog below until the service ships its metrics
        for q in panel.queries:
            problems = unknown_names_and_labels(q.expr, known)
            assert not problems, f"{name} / {panel.title}: {problems}"
            checked += 1
    assert checked, f"{name}: no query checked"


@pytest.mark.parametrize("service", sorted(planned.PENDING))
def test_planned_panels_name_only_their_documented_metrics(service):
    known = exported() | planned.planned_series(service)
    panels = [p for spec in DASHBOARDS.values() for p in spec.panels() if p.planned == service]
    assert panels
    for panel in panels:
        for q in panel.queries:
            assert metric_names(q.expr) & set(planned.planned_series(service)), f"{panel.title}: no {service} metric"
            problems = unknown_names_and_labels(q.expr, known)
            assert not problems, f"{panel.title}: {problems}"


@pytest.mark.parametrize("service", sorted(planned.PENDING))
def test_a_pending_service_exports_none_of_its_planned_metrics_yet(service):
    """Fails once the service registers one of them: time to add its module to METRIC_MODULES and drop it from
    PENDING, so its panels are checked against the code."""
    importlib.import_module(f"services.{service.split('-')[0]}.bootstrap")  # "ads-promoted": a part of ads
    shipped = set(planned.planned_series(service)) & set(exported())  # exported() reads the whole registry
    shipped -= set(planned.shipped_series(service))
    assert not shipped, f"{service} now exports {sorted(shipped)}: check its panels against the code"


@pytest.mark.parametrize("service", sorted(planned.SHIPPED))
def test_the_shipped_part_of_a_pending_service_exports_its_planned_names_and_labels(service):
    importlib.import_module(f"services.{service}.bootstrap")
    have = exported()
    for name, labels in planned.shipped_series(service).items():
        assert have.get(name) == labels, f"{name}: planned labels {sorted(labels)}, exported {have.get(name)}"


def test_alerts_name_only_exported_recorded_or_planned_metrics():
    known = exported() | recorded()
    for service in planned.PENDING:
        known |= planned.planned_series(service)
    for rule in alert_rules():
        problems = unknown_names_and_labels(rule["expr"], known)
        assert not problems, f"{rule['alert']}: {problems}"


def test_recording_rules_read_only_exported_metrics():
    rules = yaml.safe_load((PROM / "slo.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        assert not unknown_names_and_labels(rule["expr"], exported()), rule["record"]


def test_every_dashboard_query_parses(tmp_path):
    exprs = [q.concrete() for spec in DASHBOARDS.values() for q in queries(spec)]
    rules = {"groups": [{"name": "dash", "rules": [{"record": f"dashboard:q{i}", "expr": e}
                                                    for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dash_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_alert_rules_are_valid_and_their_unit_tests_pass():
    out = subprocess.run([promtool(), "check", "rules", "slo.yml", "alerts.yml"], cwd=PROM, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], cwd=PROM, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def alert_cases() -> list[dict]:
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    return [case for t in tests for case in t.get("alert_rule_test", [])]


@pytest.mark.parametrize("alert", [r["alert"] for r in alert_rules()])
def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not(alert):
    cases = [case for case in alert_cases() if case["alertname"] == alert]
    assert any(case["exp_alerts"] for case in cases), f"no promtool case where {alert} fires"
    assert any(not case["exp_alerts"] for case in cases), f"no promtool case where {alert} stays quiet"


def promtool_test_with(tmp_path: Path, rules: list[dict]) -> subprocess.CompletedProcess[str]:
    """Run alerts_test.yml against a changed copy of the alert rules (the SLO recording rules unchanged)."""
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump({"groups": [{"name": "changed", "rules": rules}]}))
    for name in ("slo.yml", "alerts_test.yml"):
        (tmp_path / name).write_text((PROM / name).read_text())
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


def test_every_alert_links_its_runbook_and_every_runbook_has_an_alert():
    alerts = {r["alert"] for r in alert_rules()}
    for rule in alert_rules():
        assert rule["annotations"]["runbook_url"] == f"deploy/runbooks/{rule['alert']}.md"
        assert rule["labels"]["severity"] in {"page", "ticket"}
        text = (RUNBOOKS / f"{rule['alert']}.md").read_text()
        assert text.startswith(f"# {rule['alert']}\n")
        for section in ("**Meaning**", "**Check**", "**Fix**"):
            assert section in text, f"{rule['alert']} runbook lacks {section}"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert {p.stem for p in RUNBOOKS.glob("*.md")} == alerts, "a runbook without an alert (or the reverse)"


def test_scrape_config_is_valid_and_loads_the_rules():
    out = subprocess.run([promtool(), "check", "config", "prometheus.yml"], cwd=PROM, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["slo.yml", "alerts.yml"]
    compose = yaml.safe_load((ROOT / "deploy" / "docker" / "prometheus" / "prometheus.yml").read_text())
    assert [Path(f).name for f in compose["rule_files"]] == config["rule_files"]


def test_the_label_checker_catches_unknown_metrics_and_labels():
    known = {"connects_moved_total": {"direction"}}
    assert unknown_names_and_labels('sum by (direction) (rate(connects_moved_total{job="x"}[5m]))', known) == []
    assert unknown_names_and_labels("rate(connects_movd_total[5m])", known) == ["metric connects_movd_total"]
    assert unknown_names_and_labels('connects_moved_total{kind="a"}', known) == ["label kind on connects_moved_total"]
    assert unknown_names_and_labels("sum by (reason) (connects_moved_total)", known) == \
        ["label reason in by/on (reason)"]


def dashboard_exprs() -> list[str]:
    """Every dashboard query with Grafana's variables replaced (for the e2e tests)."""
    return [q.concrete() for spec in DASHBOARDS.values() for q in queries(spec)]


def alert_exprs() -> list[str]:
    return [r["expr"] for r in alert_rules()]


def test_the_readme_says_how_to_watch_the_suite_with_one_sentence_per_dashboard():
    section = (ROOT / "README.md").read_text().split("## Watching the suite", 1)[1].split("\n## ", 1)[0]
    for command in ("make run", "make demo", "make snapshot"):
        assert command in section, command
    bullets = {m.group(1): m.group(2) for m in re.finditer(r"^- \*\*(.+?)\*\* (.+?)(?=^- |\Z)", section, re.M | re.S)}
    assert set(bullets) == {spec.title for spec in DASHBOARDS.values()}
    for title, text in bullets.items():
        assert text.strip().endswith(".") and text.count(". ") == 0, f"{title}: not one sentence"
