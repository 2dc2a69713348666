"""The ledger's Prometheus metrics (bounded labels: kinds, sources, reasons; never ids)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.connects.domain.model import LedgerTransaction, TransactionKind
from services.kit.errors import DomainError

entries_total = Counter("connects_ledger_entries_total", "Ledger transactions committed, by kind.", ["kind"])
moved_total = Counter("connects_moved_total",
                      "Connects moved, by direction (in: credit/return/release, out: spend/capture/expire, "
                      "held: hold) and lot source or spend/return reason.", ["direction", "source_or_reason"])
open_holds = Gauge("connects_open_holds", "Holds not yet captured, released or expired (from the database).")
insufficient_total = Counter("connects_insufficient_funds_total",
                             "Spends and holds refused for INSUFFICIENT_CONNECTS, by method.", ["method"])
refused_total = Counter("connects_refused_total", "Mutations refused by a business rule.", ["method", "reason"])
expiry_runs_total = Counter("connects_expiry_runs_total", "Expiry sweeps (lots and holds) by result.",
                            ["sweep", "result"])
expired_total = Counter("connects_expired_total", "Connects moved to breakage by lot expiry.")
replays_total = Counter("connects_idempotent_replays_total",
                        "Mutations answered from the idempotency store (same request_id, same request).",
                        ["method"])
batch_size = Histogram("connects_batch_size", "Commands per group-committed database transaction.",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
jobs_returns_total = Counter("connects_job_returns_total",
                             "Transactions returned because marketplace.jobs.v1 reported the job cancelled "
                             "or removed.", ["result"])

_DIRECTION = {TransactionKind.CREDIT: "in", TransactionKind.RETURN: "in", TransactionKind.RELEASE: "in",
              TransactionKind.SPEND: "out", TransactionKind.CAPTURE: "out", TransactionKind.EXPIRE: "out",
              TransactionKind.HOLD: "held", TransactionKind.REVERSAL: "out"}


class PrometheusMetrics:
    """Implements service_layer.handlers.Metrics."""

    def transaction_recorded(self, tx: LedgerTransaction) -> None:
        entries_total.labels(tx.kind.value).inc()
        label = tx.source or tx.spend_reason or tx.return_reason or tx.kind
        moved_total.labels(_DIRECTION[tx.kind], label.value).inc(tx.amount)
        if tx.kind is TransactionKind.EXPIRE:
            expired_total.inc(tx.amount)

    def replayed(self, method: str) -> None:
        replays_total.labels(method).inc()

    def refused(self, method: str, error: DomainError) -> None:
        refused_total.labels(method, error.reason).inc()
        if error.reason == "INSUFFICIENT_CONNECTS":
            insufficient_total.labels(method).inc()

    def batch_committed(self, size: int) -> None:
        batch_size.observe(size)

    def job_return(self, result: str) -> None:
        jobs_returns_total.labels(result).inc()
