"""The billing schema's Alembic environment (see services.kit.migrations and services/README.md)."""

from __future__ import annotations

from pathlib import Path

from services.billing.adapters import revenue_tables, tables
from services.kit.consumer import PROCESSED
from services.kit.migrations import Migrations
from services.kit.outbox import OUTBOX

MIGRATIONS = Migrations(
    "billing", Path(__file__).parent, [tables.metadata, revenue_tables.metadata, OUTBOX.metadata, PROCESSED.metadata],
    # the former kit.db migrator's versions: 1 ledger_transactions, 2 outbox, 3 processed_events, 4 its index
    legacy={1: "0001", 2: "0002", 3: "0003", 4: "0004"},
)
