"""The Kafka topics billing produces and consumes (logical names; ADSMON_KAFKA_TOPIC_PREFIX is added on the wire)."""

from __future__ import annotations

BILLING_EVENTS = "billing.events.v1"  # produced: purchases, memberships, key account_id
CONNECTS_LEDGER = "connects.ledger.v1"  # consumed: every ledger transaction (revenue, reconciliation)

PRODUCES = (BILLING_EVENTS,)
CONSUMES = (CONNECTS_LEDGER,)
