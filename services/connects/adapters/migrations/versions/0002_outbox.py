"""the transactional outbox (services.kit.outbox)

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
    migrations.create_outbox_table()


def downgrade() -> None:
    op.drop_table("outbox")
