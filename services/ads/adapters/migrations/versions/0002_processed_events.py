"""processed_events: the idempotent consumer's record of applied events (services.kit.consumer)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from services.kit import migrations

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.create_processed_events_table()
    migrations.create_processed_events_purge_index()


def downgrade() -> None:
    op.drop_table("processed_events")
