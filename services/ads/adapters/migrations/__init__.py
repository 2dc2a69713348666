"""The ads schema's Alembic environment (see services.kit.migrations and services/README.md)."""

from __future__ import annotations

from pathlib import Path

from services.ads.adapters import tables
from services.kit.consumer import PROCESSED
from services.kit.migrations import Migrations
from services.kit.outbox import OUTBOX

MIGRATIONS = Migrations(
    "ads", Path(__file__).parent, [tables.metadata, OUTBOX.metadata, PROCESSED.metadata],
    legacy={1: "0001"},  # the former kit.db migrator's version 1: the outbox
)
