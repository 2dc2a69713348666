"""The books' Prometheus series (stable names; labels are bounded enums, never ids)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.billing.domain.reconcile import MismatchKind
from services.billing.domain.revenue import Product

revenue_recognised_cents = Counter(
    "billing_revenue_recognised_cents_total", "Revenue recognised from spent purchased Connects, in USD cents.",
    ["product"])
revenue_recognised_connects = Counter(
    "billing_revenue_recognised_connects_total", "Purchased Connects spent (revenue recognised).", ["product"])
breakage_cents = Counter("billing_breakage_cents_total", "Breakage revenue from expired purchased Connects, cents.")
deferred_cents = Gauge("billing_deferred_revenue_cents",
                       "Deferred revenue: cash of purchased Connects not yet spent or expired, in USD cents.")
batch_size = Histogram("billing_revenue_batch_events", "Ledger events applied per revenue batch.",
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000))
reconciliation_mismatches = Gauge("billing_reconciliation_mismatches_last_run",
                                  "Differences found by the last reconciliation run, by kind.", ["kind"])
reconciliation_mismatches_total = Counter("billing_reconciliation_mismatches_total",
                                          "Differences found by reconciliation runs, by kind.", ["kind"])
reconciliation_runs = Counter("billing_reconciliation_runs_total",
                              "Reconciliation runs by result (clean, mismatch, error).", ["result"])
reconciliation_seconds = Gauge("billing_reconciliation_duration_seconds", "How long the last reconciliation took.")
reconciliation_last_run = Gauge("billing_reconciliation_last_run_timestamp_seconds",
                                "Unix time of the last completed reconciliation run.")

for _p in Product:  # every product's series exists from the start (rate() sees the first increment)
    revenue_recognised_cents.labels(_p.value)
    revenue_recognised_connects.labels(_p.value)
for _r in ("clean", "mismatch", "error"):
    reconciliation_runs.labels(_r)
for _k in MismatchKind:  # 0 until a run finds one (the alert reads the series before the first hourly run)
    reconciliation_mismatches.labels(_k.value)
    reconciliation_mismatches_total.labels(_k.value)
