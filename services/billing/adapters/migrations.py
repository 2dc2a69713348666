"""Billing's schema migrations, oldest first. Never edit a shipped one; append."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from services.billing.adapters import tables
from services.kit import consumer, outbox
from services.kit.db import Migration


def _v1_ledger_transactions(conn: Connection) -> None:
    tables.ledger_transactions.create(conn)


def _v5_purchases_and_memberships(conn: Connection) -> None:
    # checkfirst: these tables are created from live metadata (see kit.db.Migration).
    for table in tables.BILLING_TABLES:
        table.create(conn, checkfirst=True)


MIGRATIONS = [
    Migration(1, "ledger_transactions", _v1_ledger_transactions),
    outbox.outbox_migration(2),
    consumer.processed_events_migration(3),
    consumer.processed_events_purge_index_migration(4),
    Migration(5, "purchases_chargebacks_memberships", _v5_purchases_and_memberships),
]
