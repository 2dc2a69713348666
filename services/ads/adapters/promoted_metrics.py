"""Promoted profiles' Prometheus metrics (bounded labels: outcomes and reasons; never ids or categories).

For on-call and the product owner alike:
    ads_promoted_slots_requested_total / ads_promoted_placements_served_total   fill rate = served / requested
    ads_promoted_clicks_total{outcome}                                          clicks, and why not charged
    ads_promoted_spend_connects_total                                           Connects charged per click
    ads_promoted_active_budget_connects, ads_promoted_spent_today_connects      spend against budget (today)
    ads_promoted_connects_errors_total{reason}                                  calls to connects that failed
    ads_promoted_index_campaigns                                                the serving index's size
    (its freshness: the kit's worker_last_success_timestamp_seconds{worker="promoted-index-sync"})
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge

from services.ads.domain.promoted import ClickOutcome, Priced
from services.ads.service_layer.promoted import PromotedMetricsPort

slots_requested = Counter("ads_promoted_slots_requested_total",
                          "Promoted slots asked for by GetPlacements (the fill rate's denominator).")
placements_served = Counter("ads_promoted_placements_served_total",
                            "Placements served (impressions), the fill rate's numerator.")
placement_requests = Counter("ads_promoted_placement_requests_total",
                             "GetPlacements requests by fill: full, partial or empty.", ["fill"])
clicks_total = Counter("ads_promoted_clicks_total", "Clicks recorded, by outcome.", ["outcome"])
spend_total = Counter("ads_promoted_spend_connects_total", "Connects charged for clicks on promoted profiles.")
connects_errors = Counter("ads_promoted_connects_errors_total",
                          "Calls to the connects ledger for a click that failed, by reason.", ["reason"])
active_budget = Gauge("ads_promoted_active_budget_connects", "Sum of today's daily budgets of active campaigns.")
spent_today = Gauge("ads_promoted_spent_today_connects",
                    "Connects spent (or reserved for clicks being charged) today by active campaigns.")
index_campaigns = Gauge("ads_promoted_index_campaigns", "Campaigns in this replica's serving index.")


class PromotedMetrics(PromotedMetricsPort):
    def placements(self, requested: int, served: Sequence[Priced]) -> None:
        slots_requested.inc(requested)
        if served:
            placements_served.inc(len(served))
        placement_requests.labels("full" if len(served) >= requested else "partial" if served else "empty").inc()

    def click(self, outcome: ClickOutcome, charged: int) -> None:
        clicks_total.labels(outcome.value).inc()
        if charged:
            spend_total.inc(charged)

    def connects_error(self, reason: str) -> None:
        connects_errors.labels(reason if reason.isupper() and len(reason) <= 40 else "OTHER").inc()

    def index_state(self, campaigns: int, budget: int, spent: int) -> None:
        index_campaigns.set(campaigns)
        active_budget.set(budget)
        spent_today.set(spent)
