"""The ads and billing dashboards, written before the services export their metrics.

The metric names below are this module's proposal, chosen from issues 7
(ads) and 8 (billing). When a service ships its metrics module, align the
names here (or there), add the module to METRIC_MODULES in
tests/unit/deploy/test_monitoring.py and remove the service from `PENDING`:
from then on the test checks every panel of its dashboard (and every alert
naming its metrics) against what the code registers, as it already does for
connects. Until then the test checks that the service has not started
exporting one of these names (which would mean the switch is due).

Conventions (as in services/connects/adapters/metrics.py): counters end in
`_total`, Connects are counted as Connects, money in integer cents
(`_cents`), durations in seconds; labels are bounded (no ids).
"""

from __future__ import annotations

from deploy.grafana.spec import Dashboard, Panel, Query, Row

# Services (or parts: "ads-promoted" is ads' promoted profiles) whose metrics below are not exported yet.
PENDING: frozenset[str] = frozenset()
# Planned metrics of a pending service that one part of it already exports: checked against the code's names,
# types and labels; the service stays pending for the rest.
SHIPPED: dict[str, frozenset[str]] = {}

# name -> (type, labels, meaning). The alerts in deploy/prometheus/alerts.yml use some of them too.
ADS_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ads_auctions_open": ("gauge", (), "Boost auctions open now."),
    "ads_auctions_opened_total": ("counter", ("placebo",), "Auctions opened; placebo=\"true\" for placebo jobs."),
    "ads_auctions_closed_total": ("counter", ("reason",), "Auctions closed, by close reason (expired, first_hire, "
                                                          "job_cancelled, job_removed, manual)."),
    "ads_bids_total": ("counter", ("result",), "PlaceBid outcomes: placed, raised, refused."),
    "ads_settlement_steps_total": ("counter", ("action", "result"), "Settlement steps (action capture|release) by "
                                                                    "result (ok|retry)."),
    "ads_settlement_backlog": ("gauge", (), "Settlement steps recorded but not yet confirmed by connects."),
    "ads_settlement_oldest_step_age_seconds": ("gauge", (), "Age of the oldest unconfirmed settlement step "
                                                            "(0 when none)."),
    "ads_charged_connects_total": ("counter", ("product",), "Connects charged by product (boost, badge, "
                                                            "promoted_profile)."),
    "ads_released_connects_total": ("counter", (), "Held boost Connects released at settlement."),
    "ads_badges_active": ("gauge", (), "Availability badges switched on."),
    "ads_badge_charges_total": ("counter", ("result",), "Badge metering charges (charged, stopped_price, "
                                                        "stopped_insufficient)."),
}

# ads' promoted profiles (issue 7's third part), built apart from the auctions and the badge.
PROMOTED_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ads_promoted_slots_requested_total": ("counter", (), "Slots asked for by GetPlacements."),
    "ads_promoted_placements_served_total": ("counter", (), "Slots filled with a promoted profile (impressions)."),
    "ads_promoted_clicks_total": ("counter", ("outcome",), "RecordClick outcomes (CHARGED, PENDING, DUPLICATE, "
                                                           "BUDGET_EXHAUSTED, INSUFFICIENT_CONNECTS)."),
    "ads_promoted_spend_connects_total": ("counter", (), "Connects charged for promoted-profile clicks."),
    "ads_promoted_active_budget_connects": ("gauge", (), "Sum of today's daily budgets of active campaigns."),
    "ads_promoted_spent_today_connects": ("gauge", (), "Connects spent (or reserved) today by active campaigns."),
}

BILLING_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "billing_purchases_total": ("counter", ("outcome",), "Purchases finished by outcome (completed, failed)."),
    "billing_payment_seconds": ("histogram", ("outcome",), "Time from the charge request to the provider's "
                                                           "final answer."),
    "billing_purchased_connects_total": ("counter", (), "Connects credited for completed purchases."),
    "billing_revenue_recognised_cents_total": ("counter", ("product",), "Deferred revenue recognised, by product "
                                                                        "(proposals, boosts, badge, "
                                                                        "promoted_profiles)."),
    "billing_breakage_cents_total": ("counter", (), "Deferred revenue turned to breakage by expiry."),
    "billing_deferred_revenue_cents": ("gauge", (), "Deferred revenue balance now."),
    "billing_renewals_total": ("counter", ("outcome",), "Membership renewals (renewed, retry, lapsed)."),
    "billing_chargebacks_total": ("counter", (), "Chargebacks recorded."),
    "billing_reconciliation_mismatches_last_run": ("gauge", ("kind",), "Differences found by the last "
                                                                       "reconciliation run, by kind (0 when clean)."),
    "billing_reconciliation_runs_total": ("counter", ("result",), "Reconciliation runs (clean, mismatch, error)."),
}

PLANNED_METRICS = {"ads": ADS_METRICS, "ads-promoted": PROMOTED_METRICS, "billing": BILLING_METRICS}


def shipped_series(service: str) -> dict[str, set[str]]:
    """The series of `service`'s SHIPPED metrics (as planned_series)."""
    names = SHIPPED.get(service, frozenset())
    return {k: v for k, v in planned_series(service).items()
            if k in names or k.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") in names}


def planned_series(service: str) -> dict[str, set[str]]:
    """Series name -> label names, for every series the service's planned metrics expose (histograms as
    _bucket (with le), _count and _sum)."""
    out = {}
    for name, (kind, labels, _) in PLANNED_METRICS[service].items():
        for suffix in ("_bucket", "_count", "_sum") if kind == "histogram" else ("",):
            out[name + suffix] = set(labels) | ({"le"} if suffix == "_bucket" else set())
    return out


A = 'job="adsmon-ads"'
B = 'job="adsmon-billing"'


def _p(title: str, service: str, *queries: Query, unit: str = "short", description: str = "",
       may_be_empty: str = "", zero_when_healthy: str = "") -> Panel:
    return Panel(title, queries, unit=unit, description=description, planned=service, may_be_empty=may_be_empty,
                 zero_when_healthy=zero_when_healthy)


def _ads(title: str, *queries: Query, **kw: str) -> Panel:
    return _p(title, "ads", *queries, **kw)


def _promoted(title: str, *queries: Query, **kw: str) -> Panel:
    return _p(title, "ads-promoted", *queries, **kw)


def _billing(title: str, *queries: Query, **kw: str) -> Panel:
    return _p(title, "billing", *queries, **kw)


def _rate(metric: str, sel: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{sel}}}[$__rate_interval]))"


ADS = Dashboard(
    uid="adsmon-ads", title="adsmon ads",
    description="Boost auctions and their settlement, the availability badge, promoted profiles "
                "(placements, fill rate, clicks, spend against budget), and ads' calls to connects.",
    rows=(
        Row("Boost auctions", (
            _ads("Auctions open", Query(f"max(ads_auctions_open{{{A}}})", "open")),
            _ads("Bids per second by result", Query(_rate("ads_bids_total", A, "result"), "{{result}}"), unit="ops"),
            _ads("Placebo share of auctions opened (1h)",
                 Query(f'(sum(increase(ads_auctions_opened_total{{{A},placebo="true"}}[1h])) or on() vector(0)) / '
                       f"sum(increase(ads_auctions_opened_total{{{A}}}[1h]))", "placebo share"), unit="percentunit",
                 may_be_empty="no auction opened in the last hour",
                 zero_when_healthy="2% of jobs (ADSMON_ADS_PLACEBO_SHARE) run a placebo auction: an hour may have "
                                   "none"),
            _ads("Auctions closed by reason", Query(_rate("ads_auctions_closed_total", A, "reason"), "{{reason}}"),
                 unit="ops"),
        )),
        Row("Settlement", (
            _ads("Settlement backlog and oldest step age",
                 Query(f"max(ads_settlement_backlog{{{A}}})", "steps pending"),
                 Query(f"max(ads_settlement_oldest_step_age_seconds{{{A}}})", "oldest step age (s)"),
                 description="Captures and releases recorded at close but not yet confirmed by connects "
                             "(AdsmonSettlementBacklogOld).",
                 zero_when_healthy="each close settles within a scrape interval"),
            _ads("Settlement steps per second by action and result",
                 Query(_rate("ads_settlement_steps_total", A, "action, result"), "{{action}} {{result}}"), unit="ops"),
            _ads("Connects charged and released per second",
                 Query(_rate("ads_charged_connects_total", A, "product"), "charged {{product}}"),
                 Query(_rate("ads_released_connects_total", A), "released")),
        )),
        Row("Availability badge", (
            _ads("Active badges", Query(f"max(ads_badges_active{{{A}}})", "active")),
            _ads("Badge charges by result", Query(_rate("ads_badge_charges_total", A, "result"), "{{result}}"),
                 unit="ops"),
        )),
        Row("Promoted profiles", (
            _promoted("Placements served (slots filled per second)",
                      Query(_rate("ads_promoted_placements_served_total", A), "filled")),
            _promoted("Fill rate", Query(f"{_rate('ads_promoted_placements_served_total', A)} / "
                                         f"{_rate('ads_promoted_slots_requested_total', A)}", "fill rate"),
                      unit="percentunit"),
            _promoted("Clicks per second by outcome",
                      Query(_rate("ads_promoted_clicks_total", A, "outcome"), "{{outcome}}"), unit="ops"),
            _promoted("Spend against budget (today's spend, the last hour's pace x 24h, daily budgets)",
                      Query(f"max(ads_promoted_spent_today_connects{{{A}}})", "spent today"),
                      Query(f"sum(increase(ads_promoted_spend_connects_total{{{A}}}[1h])) * 24",
                            "spend at this pace"),
                      Query(f"max(ads_promoted_active_budget_connects{{{A}}})", "daily budgets")),
        )),
        Row("Calls to connects", (
            Panel("ads -> connects calls by method and code",
                  (Query(f'sum by (grpc_method, grpc_code) (rate(grpc_client_handled_total{{{A},'
                         f'grpc_service="adsmon.connects.v1.ConnectsService"}}[$__rate_interval]))',
                         "{{grpc_method}} {{grpc_code}}"),), unit="reqps",
                  may_be_empty="ads calls connects only for bids, settlement, badge charges and clicks"),
        )),
    ))

BILLING = Dashboard(
    uid="adsmon-billing", title="adsmon billing",
    description="Purchases and payment latency, revenue by product, deferred balance and breakage, memberships "
                "and renewals, reconciliation against the ledger and the provider.",
    rows=(
        Row("Purchases and payments", (
            _billing("Purchases per second by outcome",
                     Query(_rate("billing_purchases_total", B, "outcome"), "{{outcome}}"), unit="ops"),
            _billing("Payment latency p50 / p99",
                     Query(f"histogram_quantile(0.5, sum by (le) (rate(billing_payment_seconds_bucket{{{B}}}"
                           "[$__rate_interval])))", "p50"),
                     Query(f"histogram_quantile(0.99, sum by (le) (rate(billing_payment_seconds_bucket{{{B}}}"
                           "[$__rate_interval])))", "p99"), unit="s"),
            _billing("Connects sold per second", Query(_rate("billing_purchased_connects_total", B), "Connects")),
            _billing("Chargebacks (last hour)",
                     Query(f"sum(increase(billing_chargebacks_total{{{B}}}[1h]))", "chargebacks")),
        )),
        Row("Revenue", (
            _billing("Revenue recognised by product (cents per second)",
                     Query(_rate("billing_revenue_recognised_cents_total", B, "product"), "{{product}}")),
            _billing("Deferred revenue balance (cents)", Query(f"max(billing_deferred_revenue_cents{{{B}}})",
                                                               "deferred")),
            _billing("Breakage (cents per second)", Query(_rate("billing_breakage_cents_total", B), "breakage"),
                     zero_when_healthy="purchased Connects expire a year after they are bought"),
        )),
        Row("Memberships", (
            _billing("Renewals by outcome (last hour)",
                     Query(f"sum by (outcome) (increase(billing_renewals_total{{{B}}}[1h]))", "{{outcome}}"),
                     zero_when_healthy="memberships renew monthly; within an hour of their start only declined "
                                       "starts (start_declined) count"),
        )),
        Row("Reconciliation", (
            _billing("Mismatches found by the last run, by kind",
                     Query(f"max by (kind) (billing_reconciliation_mismatches_last_run{{{B}}})", "{{kind}}"),
                     description="Billing against the ledger and the payment provider "
                                 "(AdsmonReconciliationMismatch).",
                     zero_when_healthy="the books agree"),
            _billing("Reconciliation runs by result (last hour)",
                     Query(f"sum by (result) (increase(billing_reconciliation_runs_total{{{B}}}[1h]))",
                           "{{result}}")),
            Panel("billing -> connects calls by method and code",
                  (Query(f'sum by (grpc_method, grpc_code) (rate(grpc_client_handled_total{{{B},'
                         f'grpc_service="adsmon.connects.v1.ConnectsService"}}[$__rate_interval]))',
                         "{{grpc_method}} {{grpc_code}}"),), unit="reqps",
                  may_be_empty="billing calls connects only for credits, grants and ledger totals"),
        )),
    ))
