"""Generate the Grafana dashboards from code, using the metric names the services export.

`python deploy/grafana/generate.py` rewrites dashboards/*.json; a test checks
the committed JSON is what this produces, that every query parses (promtool)
and that every metric it names is exported by the code.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}


def panel(title: str, exprs: list[tuple[str, str]], *, unit: str = "short", kind: str = "timeseries",
          description: str = "") -> dict:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
                    for i, (expr, legend) in enumerate(exprs)],
    }


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(items: list[dict]) -> list[dict]:
    """Two panels per line; rows take a full line."""
    out, x, y = [], 0, 0
    for pid, item in enumerate(items, start=1):
        item = {**item, "id": pid}
        if item["type"] == "row":
            y += 8 if x else 0
            item["gridPos"] = {"x": 0, "y": y, "w": 24, "h": 1}
            x, y = 0, y + 1
        else:
            item["gridPos"] = {"x": x, "y": y, "w": 12, "h": 8}
            x, y = (12, y) if x == 0 else (0, y + 8)
        out.append(item)
    return out


SVC = 'job=~"$job"'


def overview() -> dict:
    items = [
        row("gRPC (RED)"),
        panel("Requests per second by method",
              [(f"sum by (job, grpc_method) (rate(grpc_server_handled_total{{{SVC}}}[$__rate_interval]))",
                "{{job}} {{grpc_method}}")], unit="reqps"),
        panel("Errors per second by code (non-OK)",
              [(f'sum by (job, grpc_code) (rate(grpc_server_handled_total{{{SVC},grpc_code!="OK"}}'
                "[$__rate_interval]))", "{{job}} {{grpc_code}}")], unit="reqps",
              description="Internal/Unavailable/DeadlineExceeded are ours; InvalidArgument/"
                          "FailedPrecondition are callers' mistakes or business refusals."),
        panel("Latency p50 / p99 by method",
              [(f"histogram_quantile(0.5, sum by (le, grpc_method) "
                f"(rate(grpc_server_handling_seconds_bucket{{{SVC}}}[$__rate_interval])))", "p50 {{grpc_method}}"),
               (f"histogram_quantile(0.99, sum by (le, grpc_method) "
                f"(rate(grpc_server_handling_seconds_bucket{{{SVC}}}[$__rate_interval])))", "p99 {{grpc_method}}")],
              unit="s"),
        panel("Outgoing calls by code",
              [(f"sum by (job, grpc_method, grpc_code) (rate(grpc_client_handled_total{{{SVC}}}"
                "[$__rate_interval]))", "{{job}} -> {{grpc_method}} {{grpc_code}}")], unit="reqps"),
        row("Events (outbox, consumers)"),
        panel("Outbox backlog and oldest unpublished age",
              [(f"max by (service) (outbox_backlog{{{SVC}}})", "backlog {{service}}"),
               (f"max by (service) (outbox_oldest_unpublished_age_seconds{{{SVC}}})", "oldest age s {{service}}")]),
        panel("Outbox publish lag p99",
              [(f"histogram_quantile(0.99, sum by (le, service) "
                f"(rate(outbox_publish_lag_seconds_bucket{{{SVC}}}[$__rate_interval])))", "{{service}}")],
              unit="s"),
        panel("Consumer lag by topic",
              [(f"sum by (service, topic) (consumer_lag{{{SVC}}})", "{{service}} {{topic}}")]),
        panel("Consumed records by result, dead letters",
              [(f"sum by (service, topic, result) (rate(consumer_processed_total{{{SVC}}}[$__rate_interval]))",
                "{{service}} {{topic}} {{result}}"),
               (f"sum by (service, topic) (increase(consumer_dlq_total{{{SVC}}}[$__rate_interval]))",
                "DLQ {{service}} {{topic}}")]),
        row("Connects ledger"),
        panel("Ledger transactions per second by kind",
              [(f"sum by (kind) (rate(connects_ledger_entries_total{{{SVC}}}[$__rate_interval]))", "{{kind}}")],
              unit="ops"),
        panel("Connects moved per second",
              [(f"sum by (direction, source_or_reason) (rate(connects_moved_total{{{SVC}}}[$__rate_interval]))",
                "{{direction}} {{source_or_reason}}")]),
        panel("Refusals by method and reason",
              [(f"sum by (method, reason) (rate(connects_refused_total{{{SVC}}}[$__rate_interval]))",
                "{{method}} {{reason}}"),
               (f"sum (rate(connects_insufficient_funds_total{{{SVC}}}[$__rate_interval]))", "insufficient Connects")],
              description="Business refusals (not errors): a rise in INSUFFICIENT_CONNECTS after a release "
                          "may mean holds are not being released."),
        panel("Open holds, idempotent replays",
              [(f"max (connects_open_holds{{{SVC}}})", "open holds"),
               (f"sum by (method) (rate(connects_idempotent_replays_total{{{SVC}}}[$__rate_interval]))",
                "replays/s {{method}}")]),
        panel("Group commit: commands per transaction (p50, p99)",
              [(f"histogram_quantile(0.5, sum by (le) (rate(connects_batch_size_bucket{{{SVC}}}[$__rate_interval])))",
                "p50"),
               (f"histogram_quantile(0.99, sum by (le) (rate(connects_batch_size_bucket{{{SVC}}}[$__rate_interval])))",
                "p99")]),
        panel("Expiry sweeps and expired Connects",
              [(f"sum by (sweep, result) (increase(connects_expiry_runs_total{{{SVC}}}[$__rate_interval]))",
                "{{sweep}} {{result}}"),
               (f"sum (increase(connects_expired_total{{{SVC}}}[$__rate_interval]))", "expired Connects")]),
    ]
    return {
        "uid": "adsmon-overview",
        "title": "adsmon overview",
        "tags": ["adsmon"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
            {"name": "job", "type": "query", "datasource": DS, "query": 'label_values(up{job=~"adsmon-.*"}, job)',
             "multi": True, "includeAll": True, "current": {"text": "All", "value": "$__all"}, "refresh": 2},
        ]},
        "panels": layout(items),
    }


DASHBOARDS = {"adsmon-overview.json": overview}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
