"""the retention purge's index on processed_events (consumer_group, processed_at)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from services.kit import migrations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.create_processed_events_purge_index()


def downgrade() -> None:
    migrations.drop_processed_events_purge_index()
