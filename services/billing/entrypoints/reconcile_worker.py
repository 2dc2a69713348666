"""The scheduled reconciliation: a kit Worker that runs Reconcile every `interval` seconds.

The run exports `billing_reconciliation_mismatches_last_run{kind}` (gauge)
`billing_reconciliation_mismatches_total{kind}` and `billing_reconciliation_runs_total{result}`
(counters); the worker base
adds `worker_runs_total` and `worker_last_success_timestamp_seconds`. Two
replicas are safe: runs are serialised by an advisory lock, and the one that
finds another run active skips its turn.
"""

from __future__ import annotations

import logging

from services.billing.service_layer.reconcile import Reconciler, ReconciliationInProgress
from services.kit.worker import Worker

log = logging.getLogger(__name__)


class ReconcileWorker(Worker):
    def __init__(self, reconciler: Reconciler, *, service: str = "billing", interval: float = 3600.0) -> None:
        super().__init__("reconcile", service=service, interval=interval)
        self.reconciler = reconciler
        self.last_run_id = ""

    def run_once(self) -> bool:
        try:
            response = self.reconciler.run()
        except ReconciliationInProgress:
            log.info("reconciliation already running elsewhere; skipping this turn")
            return False
        self.last_run_id = response.run_id
        if response.mismatches:
            log.warning("reconciliation %s found %d differences", response.run_id, len(response.mismatches))
        return False
