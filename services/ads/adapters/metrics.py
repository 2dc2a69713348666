"""Ads' Prometheus metrics for auctions and badges (bounded labels; never ids).

Names follow the dashboard plan in deploy/grafana/planned.py. On-call reads the settlement backlog and
its oldest step's age (a stuck close), errors calling connects and the bid rate; the product owner
reads auctions open, the placebo share, Connects charged and released, active badges and badge charges.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

auctions_opened_total = Counter("ads_auctions_opened_total", "Auctions opened; placebo=\"true\" for placebo jobs.",
                                ["placebo"])
auctions_closed_total = Counter("ads_auctions_closed_total", "Auctions closed, by close reason (expired, "
                                "first_hire, job_cancelled, job_removed, manual).", ["reason"])
auctions_open = Gauge("ads_auctions_open", "Boost auctions open now (from the database).")
placebo_share = Gauge("ads_placebo_share_configured", "Configured share of jobs that run a placebo auction.")
bids_total = Counter("ads_bids_total", "PlaceBid outcomes: placed, raised, refused.", ["result"])
bids_refused_total = Counter("ads_bids_refused_total", "PlaceBid refusals by reason.", ["reason"])
settlement_steps_total = Counter("ads_settlement_steps_total",
                                 "Settlement steps (action capture|release) by result (ok, retry, hold_gone: the "
                                 "hold expired or resolved without ads).", ["action", "result"])
charged_connects_total = Counter("ads_charged_connects_total",
                                 "Connects charged by product (boost, badge, promoted_profile).", ["product"])
released_connects_total = Counter("ads_released_connects_total", "Held boost Connects released at settlement.")
settlement_backlog = Gauge("ads_settlement_backlog", "Settlement steps recorded but not yet confirmed by connects.")
settlement_oldest_age = Gauge("ads_settlement_oldest_step_age_seconds",
                              "Age of the oldest unconfirmed settlement step (0 when none).")
connects_errors_total = Counter("ads_connects_errors_total",
                                "Calls to the connects ledger that failed (unreachable or refused unexpectedly).",
                                ["method", "reason"])
badges_active = Gauge("ads_badges_active", "Availability badges switched on (from the database).")
badge_charges_total = Counter("ads_badge_charges_total", "Badge metering charges (charged, stopped_price, "
                              "stopped_insufficient, stopped_user).", ["result"])

_BADGE_STOPS = {"PRICE_ABOVE_MAX": "stopped_price", "INSUFFICIENT_CONNECTS": "stopped_insufficient",
                "USER": "stopped_user"}


class PrometheusMetrics:
    """Implements service_layer.metrics.Metrics."""

    def auction_opened(self, placebo: bool) -> None:
        auctions_opened_total.labels(str(placebo).lower()).inc()

    def auction_closed(self, reason: str) -> None:
        auctions_closed_total.labels(reason.lower()).inc()

    def bid_placed(self, raised: bool, placebo: bool) -> None:
        bids_total.labels("raised" if raised else "placed").inc()

    def bid_refused(self, reason: str) -> None:
        bids_total.labels("refused").inc()
        bids_refused_total.labels(reason).inc()

    def step_settled(self, action: str, outcome: str, connects: int) -> None:
        if outcome in ("CAPTURED", "RELEASED"):
            settlement_steps_total.labels(action.lower(), "ok").inc()
        elif outcome == "RETRY":
            settlement_steps_total.labels(action.lower(), "retry").inc()
        else:
            settlement_steps_total.labels(action.lower(), "hold_gone").inc()
        if outcome == "CAPTURED":
            charged_connects_total.labels("boost").inc(connects)
        elif outcome == "RELEASED":
            released_connects_total.inc(connects)

    def connects_error(self, method: str, reason: str) -> None:
        connects_errors_total.labels(method, reason).inc()

    def badge_charged(self, connects: int) -> None:
        badge_charges_total.labels("charged").inc()
        charged_connects_total.labels("badge").inc(connects)

    def badge_stopped(self, reason: str) -> None:
        badge_charges_total.labels(_BADGE_STOPS.get(reason, "stopped_user")).inc()


def set_gauges(*, open_auctions: int, backlog: int, oldest_age_seconds: float, active_badges: int) -> None:
    auctions_open.set(open_auctions)
    settlement_backlog.set(backlog)
    settlement_oldest_age.set(oldest_age_seconds)
    badges_active.set(active_badges)
