"""A small typed description of a dashboard, rendered to Grafana JSON with grafana-foundation-sdk.

Dashboards are written as `Dashboard(rows=[Row(panels=[Panel(queries=[Query(...)])])])`.
The same objects feed three readers: `render()` (the JSON Grafana loads), the
snapshot (`python -m deploy.grafana.snapshot`, every query through
Prometheus' query_range into one PNG) and the tests (every metric a query
names is exported by the code; every query returns data on a live suite,
unless the panel says why it may be empty; not only zeros, unless it says why zero is normal).

A panel whose metrics a service does not export yet names that service in
`planned` (see deploy/grafana/planned.py): its metric names are documented
there and checked against the code once the service ships them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from grafana_foundation_sdk.builders import common as gcommon
from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import prometheus as gprom
from grafana_foundation_sdk.builders import stat as gstat
from grafana_foundation_sdk.builders import timeseries as gts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as gcm
from grafana_foundation_sdk.models import dashboard as gmodel

# The data source deploy/docker/grafana/provisioning/datasources/prometheus.yaml provisions.
DATASOURCE_UID = "prometheus"
DATASOURCE = gmodel.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
# Grafana's own placeholders, and what a reader outside Grafana substitutes for them.
ALL_JOBS = "adsmon-.*"
METRIC_RE = re.compile(r"\b((?:grpc|outbox|consumer|connects|billing|ads|worker|adsmon:)[a-z0-9_:]*)\b")


@dataclass(frozen=True)
class Query:
    """One PromQL expression and its legend (Grafana's `{{label}}` syntax)."""

    expr: str
    legend: str = ""

    def concrete(self, *, rate_interval: str = "1m", range_: str = "15m", job: str = ALL_JOBS) -> str:
        """The expression with Grafana's variables replaced, for Prometheus' HTTP API or promtool."""
        return (self.expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
                .replace("$job", job))

    def metrics(self) -> set[str]:
        """Metric (and recording rule) names the expression reads; label names are excluded."""
        names = set(METRIC_RE.findall(self.expr))
        return {n for n in names if not n.startswith("grpc_") or n.endswith(("_total", "_bucket", "_count",
                                                                              "_sum", "_seconds"))}


@dataclass(frozen=True)
class Panel:
    """A time series (or stat) panel."""

    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: Literal["timeseries", "stat"] = "timeseries"
    description: str = ""
    # Why the panel may legitimately show no data (e.g. "no dead letters"); empty: it always has data.
    may_be_empty: str = ""
    # Why every value may be 0 on a healthy suite under simulated traffic (no errors, nothing expired yet);
    # empty: `make demo` moves it, and tests/e2e/test_monitoring_live.py checks that it does.
    zero_when_healthy: str = ""
    # The service whose metrics this panel reads but which does not export them yet ("ads", "billing").
    planned: str = ""
    width: int = 12


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    job_variable: bool = False  # adds a $job selector (the overview); per-service boards fix their job
    tags: tuple[str, ...] = field(default=("adsmon",))

    def panels(self) -> list[Panel]:
        return [p for r in self.rows for p in r.panels]


def _panel(panel: Panel, pid: int) -> Any:
    builder: Any
    if panel.kind == "stat":
        builder = gstat.Panel().reduce_options(gcommon.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    else:
        builder = (gts.Panel().fill_opacity(10).line_width(1)
                   .legend(gcommon.VizLegendOptions().display_mode(gcm.LegendDisplayMode.LIST)
                           .placement(gcm.LegendPlacement.BOTTOM).show_legend(True))
                   .tooltip(gcommon.VizTooltipOptions().mode(gcm.TooltipDisplayMode.MULTI)
                            .sort(gcm.SortOrder.DESCENDING)))
    builder = (builder.id(pid).title(panel.title).datasource(DATASOURCE).unit(panel.unit)
               .height(8).span(panel.width))
    description = panel.description
    if panel.may_be_empty:
        description = f"{description} May be empty: {panel.may_be_empty}".strip()
    if panel.planned:
        description = f"{description} [planned: {panel.planned} metrics, see deploy/grafana/planned.py]".strip()
    if description:
        builder = builder.description(description)
    for i, q in enumerate(panel.queries):
        builder = builder.with_target(gprom.Dataquery().expr(q.expr).legend_format(q.legend or "__auto")
                                      .ref_id(chr(65 + i)).datasource(DATASOURCE))
    return builder


def build(spec: Dashboard) -> gmodel.Dashboard:
    """The SDK's dashboard model for `spec` (ids are unique and stable: their order in the spec)."""
    board = (gdash.Dashboard(spec.title).uid(spec.uid).description(spec.description).tags(list(spec.tags))
             .timezone("utc").refresh("30s").time("now-1h", "now").readonly())
    if spec.job_variable:
        board = board.with_variable(
            gdash.QueryVariable("job").label("Service").datasource(DATASOURCE)
            .query('label_values(up{job=~"adsmon-.*"}, job)').multi(True).include_all(True)
            .all_value(ALL_JOBS).refresh(gmodel.VariableRefresh.ON_TIME_RANGE_CHANGED))
    pid = 0
    for row in spec.rows:
        pid += 1
        board = board.with_row(gdash.Row(row.title).id(pid))
        for panel in row.panels:
            pid += 1
            board = board.with_panel(_panel(panel, pid))
    return board.build()


def render(spec: Dashboard) -> str:
    """Grafana dashboard JSON (stable key order, so the committed files diff cleanly)."""
    data = json.loads(json.dumps(build(spec), cls=JSONEncoder))
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
