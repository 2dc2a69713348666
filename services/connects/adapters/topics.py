"""The Kafka topics connects produces and consumes (logical names; ADSMON_KAFKA_TOPIC_PREFIX is added on the wire)."""

from __future__ import annotations

LEDGER = "connects.ledger.v1"  # produced: one LedgerTransactionRecorded per committed transaction, key account_id
MARKETPLACE_JOBS = "marketplace.jobs.v1"  # consumed: job cancelled/removed -> returned Connects, key job_id

PRODUCES = (LEDGER,)
CONSUMES = (MARKETPLACE_JOBS,)
