"""ads_search_counts: talent searches per category and UTC hour, for the badge price

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ads_search_counts",
        sa.Column("category", sa.String(length=128), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("searches", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("searches >= 0", name="ck_ads_search_counts_searches"),
        sa.PrimaryKeyConstraint("category", "hour"),
    )


def downgrade() -> None:
    op.drop_table("ads_search_counts")
