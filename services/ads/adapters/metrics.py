"""Ads' Prometheus metrics for auctions and badges (bounded labels; never ids).

On-call reads the settlement backlog and its oldest step's age (a stuck close), errors calling connects
and the bid rate; the product owner reads auctions open, the placebo share, charges and releases, active
badges and badge charges.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

auctions_opened_total = Counter("ads_auctions_opened_total", "Boost auctions opened, by placebo flag.",
                                ["placebo"])
auctions_open = Gauge("ads_auctions_open", "Boost auctions taking bids (from the database).")
placebo_share = Gauge("ads_placebo_share_configured", "Configured share of jobs that run a placebo auction.")
bids_total = Counter("ads_bids_total", "Bids held and ranked, by kind (placed, raised) and placebo flag.",
                     ["kind", "placebo"])
bids_refused_total = Counter("ads_bids_refused_total", "PlaceBid refusals by reason.", ["reason"])
settlement_steps_total = Counter("ads_settlement_steps_total",
                                 "Settlement steps confirmed by the ledger, by action and outcome.",
                                 ["action", "outcome"])
settled_connects_total = Counter("ads_settled_connects_total", "Connects captured from boost holds.")
settlement_backlog = Gauge("ads_settlement_backlog", "Settlement steps not yet confirmed by the ledger.")
settlement_oldest_age = Gauge("ads_settlement_oldest_step_age_seconds",
                              "Age of the oldest unconfirmed settlement step (0 when none).")
connects_errors_total = Counter("ads_connects_errors_total",
                                "Calls to the connects ledger that failed (unreachable or refused unexpectedly).",
                                ["method", "reason"])
badges_active = Gauge("ads_badges_active", "Availability badges switched on (from the database).")
badge_charges_total = Counter("ads_badge_charges_total", "Connects charged for availability badges.")
badges_stopped_total = Counter("ads_badges_stopped_total", "Badges switched off, by reason.", ["reason"])


class PrometheusMetrics:
    """Implements service_layer.metrics.Metrics."""

    def auction_opened(self, placebo: bool) -> None:
        auctions_opened_total.labels(str(placebo).lower()).inc()

    def bid_placed(self, raised: bool, placebo: bool) -> None:
        bids_total.labels("raised" if raised else "placed", str(placebo).lower()).inc()

    def bid_refused(self, reason: str) -> None:
        bids_refused_total.labels(reason).inc()

    def step_settled(self, action: str, outcome: str, connects: int) -> None:
        settlement_steps_total.labels(action, outcome).inc()
        settled_connects_total.inc(connects)

    def connects_error(self, method: str, reason: str) -> None:
        connects_errors_total.labels(method, reason).inc()

    def badge_charged(self, connects: int) -> None:
        badge_charges_total.inc(connects)

    def badge_stopped(self, reason: str) -> None:
        badges_stopped_total.labels(reason).inc()


def set_gauges(*, open_auctions: int, backlog: int, oldest_age_seconds: float, active_badges: int) -> None:
    auctions_open.set(open_auctions)
    settlement_backlog.set(backlog)
    settlement_oldest_age.set(oldest_age_seconds)
    badges_active.set(active_badges)
