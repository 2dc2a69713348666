"""The connects schema's Alembic environment (see services.kit.migrations and services/README.md)."""

from __future__ import annotations

from pathlib import Path

from services.connects.adapters import tables
from services.kit.consumer import PROCESSED
from services.kit.migrations import Migrations
from services.kit.outbox import OUTBOX

MIGRATIONS = Migrations(
    "connects", Path(__file__).parent, [tables.metadata, OUTBOX.metadata, PROCESSED.metadata],
    # the former kit.db migrator's versions: 1 ledger, 2 outbox, 3 processed_events, 4 its purge index
    legacy={1: "0001", 2: "0002", 3: "0003", 4: "0004"},
)
