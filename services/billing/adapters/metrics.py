"""Billing's money-in Prometheus metrics (bounded labels: outcomes and event types, never ids)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

purchases_total = Counter("billing_purchases_total", "Purchases that reached a final state, by outcome "
                          "(completed, failed).", ["outcome"])
payment_latency = Histogram("billing_payment_seconds",
                            "Time of one payment provider call, by its outcome (succeeded, processing, "
                            "declined, unavailable).", ["outcome"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
purchased_connects_total = Counter("billing_purchased_connects_total", "Connects credited for completed purchases.")
renewals_total = Counter("billing_renewals_total", "Membership cycle steps by outcome (renewed, basic_granted, "
                         "payment_retry, lapsed, start_declined, error).", ["outcome"])
chargebacks_total = Counter("billing_chargebacks_total", "Chargebacks recorded (clawback confirmed by the ledger).")
chargeback_connects_removed = Counter("billing_chargeback_connects_removed_total",
                                      "Purchased Connects removed from wallets by chargebacks.")
chargeback_loss_cents = Counter("billing_chargeback_loss_cents_total",
                                "Value of already-spent Connects booked as chargeback losses, in cents.")
webhook_events_total = Counter("billing_provider_webhook_events_total",
                               "Payment provider webhook events by type and outcome (applied, ignored, duplicate, "
                               "unmatched).", ["type", "outcome"])

# Every renewal outcome's series from the start: a membership renews monthly, so without these the renewals
# panel (and any rate() over it) would have no series until a month after the first start.
for _outcome in ("renewed", "basic_granted", "payment_retry", "lapsed", "start_declined", "error"):
    renewals_total.labels(_outcome)


class PrometheusMetrics:
    """Implements service_layer.context.Metrics."""

    def purchase_finished(self, outcome: str, connects: int) -> None:
        purchases_total.labels(outcome).inc()
        if outcome == "completed":
            purchased_connects_total.inc(connects)

    def payment_call(self, outcome: str, seconds: float) -> None:
        payment_latency.labels(outcome).observe(seconds)

    def renewal(self, outcome: str) -> None:
        renewals_total.labels(outcome).inc()

    def chargeback_recorded(self, connects_removed: int, loss_cents: int) -> None:
        chargebacks_total.inc()
        chargeback_connects_removed.inc(connects_removed)
        chargeback_loss_cents.inc(loss_cents)

    def webhook_event(self, type_: str, outcome: str) -> None:
        webhook_events_total.labels(type_, outcome).inc()
