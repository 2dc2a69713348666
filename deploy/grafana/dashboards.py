"""The overview and the connects dashboard (their metrics are exported today).

Every expression names only series the services export (tests/unit/deploy/
test_monitoring.py checks it against the prometheus_client registry) or the
SLO recording rules in deploy/prometheus/slo.yml. Panels that could go blank
on a healthy suite fall back to zero (`or on() vector(0)`), or say in
`may_be_empty` why they may.
"""

from __future__ import annotations

from deploy.grafana.planned import ADS, BILLING
from deploy.grafana.spec import Dashboard, Panel, Query, Row

J = 'job=~"$job"'
APP = f'{J},grpc_service=~"adsmon.*"'  # the suite's own APIs (not health checks or reflection)
SERVER_ERRORS = "Unknown|Internal|Unavailable|DataLoss|DeadlineExceeded"
AVAILABILITY_BUDGET = 0.001  # SLO 99.9% of calls without a server error (deploy/prometheus/slo.yml)
LATENCY_BUDGET = 0.01  # SLO 99% of calls within 250 ms


def _rate(metric: str, selector: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval]))"


def _quantile(q: float, selector: str, by: str, metric: str = "grpc_server_handling_seconds_bucket") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}{{{selector}}}[$__rate_interval])))"


CALLS_BY_METHOD = _rate("grpc_server_handled_total", APP, "job, grpc_method")
ERRORS_BY_METHOD = _rate("grpc_server_handled_total", f'{APP},grpc_code=~"{SERVER_ERRORS}"', "job, grpc_method")


def _burn(rule: str, budget: float, windows: tuple[str, ...]) -> tuple[Query, ...]:
    return tuple(Query(f"max by (job) (adsmon:{rule}:ratio_rate{w}{{{J}}}) / {budget}", f"{{{{job}}}} {w}")
                 for w in windows)


RED = Row("Traffic, errors, latency (RED, per service and method)", (
    Panel("Requests per second by method",
          (Query(_rate("grpc_server_handled_total", APP, "job, grpc_method"), "{{job}} {{grpc_method}}"),),
          unit="reqps"),
    Panel("Server error ratio by method",
          (Query(f"({ERRORS_BY_METHOD} or {CALLS_BY_METHOD} * 0) / {CALLS_BY_METHOD}", "{{job}} {{grpc_method}}"),),
          unit="percentunit", zero_when_healthy="no call failed on the server's side",
          description="Calls answered with a server-side code (Internal, Unavailable, DeadlineExceeded, Unknown, "
                      "DataLoss): ours to fix. Zero is drawn as zero."),
    Panel("Refusals and client errors by code",
          (Query(_rate("grpc_server_handled_total", f'{APP},grpc_code!~"OK|{SERVER_ERRORS}"', "job, grpc_code"),
                 "{{job}} {{grpc_code}}"),),
          unit="reqps", may_be_empty="no call was refused (every request valid and allowed)",
          description="FailedPrecondition (INSUFFICIENT_CONNECTS...), InvalidArgument, AlreadyExists, NotFound, "
                      "Unimplemented (a method not built yet): callers' mistakes or business refusals."),
    Panel("Latency p50 and p99 by method",
          (Query(_quantile(0.5, APP, "job, grpc_method"), "p50 {{job}} {{grpc_method}}"),
           Query(_quantile(0.99, APP, "job, grpc_method"), "p99 {{job}} {{grpc_method}}")), unit="s"),
    Panel("Calls to other services by code",
          (Query(_rate("grpc_client_handled_total", J, "job, grpc_method, grpc_code") + " or on() vector(0)",
                 "{{job}} -> {{grpc_method}} {{grpc_code}}"),),
          unit="reqps", description="ads and billing call connects; connects calls no one. A single 0 line: "
                                    "no calls in the window."),
))

BUDGET = Row("Error budget burn (multi-window, SRE workbook)", (
    Panel("Availability budget burn rate (1h, 6h, 1d, 3d)",
          _burn("grpc_server_errors", AVAILABILITY_BUDGET, ("1h", "6h", "1d", "3d")),
          zero_when_healthy="no server errors: no budget spent",
          description="1 = spending the 30-day budget of 0.1% server errors exactly in 30 days. Pages at 14.4 "
                      "(1h, with 5m) and 6 (6h, with 30m); tickets at 3 (1d) and 1 (3d). "
                      "No calls in a window: no line."),
    Panel("Latency budget burn rate (1h, 6h, 1d, 3d)",
          _burn("grpc_server_slow", LATENCY_BUDGET, ("1h", "6h", "1d", "3d")),
          zero_when_healthy="no call slower than 250 ms",
          description="1 = spending the budget of 1% of calls slower than 250 ms exactly in 30 days; same "
                      "thresholds as availability."),
))

EVENTS = Row("Events: Kafka consumers, outboxes, dead letters", (
    Panel("Consumer lag by topic", (Query(f"sum by (service, topic) (consumer_lag{{{J}}})",
                                          "{{service}} {{topic}}"),),
          zero_when_healthy="consumers keep up between scrapes",
          description="Records behind the end of the partitions the consumer owns."),
    Panel("Consumed records by result",
          (Query(_rate("consumer_processed_total", J, "service, topic, result"), "{{service}} {{topic}} {{result}}"),),
          unit="ops", may_be_empty="no records on the consumed topics in the window"),
    Panel("Outbox backlog (rows not yet acknowledged by Kafka)",
          (Query(f"max by (service) (outbox_backlog{{{J}}})", "{{service}}"),),
          zero_when_healthy="relays publish each row within a scrape interval"),
    Panel("Outbox oldest unpublished age", (Query(f"max by (service) (outbox_oldest_unpublished_age_seconds{{{J}}})",
                                                  "{{service}}"),), unit="s",
          zero_when_healthy="relays publish each row within a scrape interval"),
    Panel("Dead-lettered records (last hour)",
          (Query(f"sum by (service, topic) (increase(consumer_dlq_total{{{J}}}[1h])) or on() vector(0)",
                 "{{service}} {{topic}}"),),
          zero_when_healthy="every record was applied",
          description="Records sent to <topic>.dlq: their effect was NOT applied. The counter restarts with the "
                      "process; the topic itself keeps them (deploy/runbooks/AdsmonDeadLetters.md). "
                      "A single 0 line: none."),
    Panel("Outbox events published per second by topic",
          (Query(_rate("outbox_published_total", J, "service, topic"), "{{service}} {{topic}}"),),
          unit="ops", may_be_empty="nothing was written in the window"),
))

WORKERS = Row("Background workers and scrape targets", (
    Panel("Seconds since each worker's last success",
          (Query(f"time() - max by (service, worker) (worker_last_success_timestamp_seconds{{{J}}} > 0)",
                 "{{service}} {{worker}}"),), unit="s",
          description="Relays, consumers and schedulers (kit.worker). A line that climbs: that worker stopped "
                      "succeeding (AdsmonWorkerNotSucceeding)."),
    Panel("Worker runs per second by outcome",
          (Query(_rate("worker_runs_total", J, "service, worker, outcome"), "{{service}} {{worker}} {{outcome}}"),),
          unit="ops"),
    Panel("Scrape targets up", (Query(f"up{{{J}}}", "{{job}} {{instance}}"),), width=24),
))

OVERVIEW = Dashboard(
    uid="adsmon-overview", title="adsmon overview",
    description="The suite at a glance: RED per service and method, SLO budget burn, Kafka consumers, outboxes, "
                "dead letters, background workers.",
    rows=(RED, BUDGET, EVENTS, WORKERS), job_variable=True)

C = 'job="adsmon-connects"'


def _zero_if_none(expr: str) -> str:
    return f"{expr} or on() vector(0)"


CONNECTS = Dashboard(
    uid="adsmon-connects", title="adsmon connects ledger",
    description="The Connects ledger's business: Connects moved in and out, holds, expiries, refusals, returns, "
                "and how the group-commit batcher is doing.",
    rows=(
        Row("Connects moved", (
            Panel("Connects moved per second by direction",
                  (Query(f"sum by (direction) (rate(connects_moved_total{{{C}}}[$__rate_interval]))",
                         "{{direction}}"),),
                  description="in: credits, returns, released holds; out: spends, captures, expiries; "
                              "held: new holds."),
            Panel("Connects moved per second by source or reason",
                  (Query(f"sum by (direction, source_or_reason) (rate(connects_moved_total{{{C}}}[$__rate_interval]))",
                         "{{direction}} {{source_or_reason}}"),)),
            Panel("Connects moved in the last 15 minutes", kind="stat",
                  queries=(Query(f"sum by (direction) (increase(connects_moved_total{{{C}}}[15m]))",
                                 "{{direction}}"),)),
            Panel("Ledger transactions per second by kind",
                  (Query(f"sum by (kind) (rate(connects_ledger_entries_total{{{C}}}[$__rate_interval]))",
                         "{{kind}}"),),
                  unit="ops"),
        )),
        Row("Holds and expiries", (
            Panel("Open holds", (Query(f"max(connects_open_holds{{{C}}})", "open holds"),),
                  description="From the database, refreshed by the expiry sweep (every 30 s)."),
            Panel("Holds placed, captured, released per second",
                  (Query(_zero_if_none(f'sum by (kind) (rate(connects_ledger_entries_total{{{C},'
                                       f'kind=~"HOLD|CAPTURE|RELEASE"}}[$__rate_interval]))'), "{{kind}}"),),
                  unit="ops", description="Holds are ads' (boost bids). A single 0 line: none in the window."),
            Panel("Expired Connects (last hour)",
                  (Query(f"sum(increase(connects_expired_total{{{C}}}[1h]))", "expired Connects"),),
                  zero_when_healthy="lots expire a year after they are issued",
                  description="Lots past their expiry moved to breakage by the sweep."),
            Panel("Expiry sweeps by result",
                  (Query(f"sum by (sweep, result) (increase(connects_expiry_runs_total{{{C}}}[5m]))",
                         "{{sweep}} {{result}}"),)),
        )),
        Row("Refusals, replays, returns", (
            Panel("Refusals per second by method and reason",
                  (Query(f"sum by (method, reason) (rate(connects_refused_total{{{C}}}[$__rate_interval]))",
                         "{{method}} {{reason}}"),), unit="ops",
                  may_be_empty="no request was refused (every wallet had enough Connects)",
                  description="Business refusals, not errors. INSUFFICIENT_CONNECTS rising after a release may "
                              "mean holds are not being released."),
            Panel("Idempotent replays per second by method",
                  (Query(_zero_if_none(f"sum by (method) (rate(connects_idempotent_replays_total{{{C}}}"
                                       "[$__rate_interval]))"), "{{method}}"),), unit="ops",
                  description="Retries answered from the idempotency store. A single 0 line: none."),
            Panel("Job returns (marketplace.jobs.v1) by result",
                  (Query(_zero_if_none(f"sum by (result) (increase(connects_job_returns_total{{{C}}}[5m]))"),
                         "{{result}}"),),
                  description="Transactions returned because a job was cancelled before contract or removed."),
            Panel("Connects calls p99 by method",
                  (Query(_quantile(0.99, f'{C},grpc_service=~"adsmon.*"', "grpc_method"), "{{grpc_method}}"),),
                  unit="s"),
        )),
        Row("Group commit", (
            Panel("Commands per database transaction (p50, p99)",
                  (Query(_quantile(0.5, C, "job", "connects_batch_size_bucket"), "p50"),
                   Query(_quantile(0.99, C, "job", "connects_batch_size_bucket"), "p99"))),
            Panel("Ledger outbox backlog and jobs consumer lag",
                  (Query(f"max(outbox_backlog{{{C}}})", "outbox backlog"),
                   Query(f"sum(consumer_lag{{{C}}})", "marketplace.jobs.v1 lag")),
                  zero_when_healthy="the relay and the consumer keep up between scrapes"),
        )),
    ))

DASHBOARDS: dict[str, Dashboard] = {
    "adsmon-overview.json": OVERVIEW,
    "adsmon-connects.json": CONNECTS,
    "adsmon-ads.json": ADS,
    "adsmon-billing.json": BILLING,
}
