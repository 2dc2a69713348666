"""Drafting a service's next Alembic revision from the tables it lacks (on SQLite)."""

from __future__ import annotations

import shutil

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.connects.adapters import tables
from services.connects.adapters.migrations import MIGRATIONS
from services.kit.consumer import PROCESSED
from services.kit.db import make_engine
from services.kit.migrations import Migrations, draft_revision, upgrade
from services.kit.outbox import OUTBOX


def test_a_drafted_revision_creates_the_new_table_and_upgrades_to_exactly_the_metadata(tmp_path):
    script_dir = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS.script_location, script_dir, ignore=shutil.ignore_patterns("__pycache__"))
    metadata = sa.MetaData()
    for table in tables.metadata.sorted_tables:
        table.to_metadata(metadata)
    sa.Table("widgets", metadata, sa.Column("widget_id", sa.String(32), primary_key=True),
             sa.Column("size", sa.BigInteger, nullable=False))
    migrations = Migrations("connects", script_dir, [metadata, OUTBOX.metadata, PROCESSED.metadata])

    path = draft_revision(migrations, "widgets")

    assert path.name == "0005_widgets.py"
    text = path.read_text()
    assert "op.create_table('widgets'" in text and 'down_revision = "0004"' in text.replace("'", '"')
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        assert upgrade(engine, migrations) == (None, "0005")
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), [metadata, OUTBOX.metadata,
                                                                       PROCESSED.metadata]) == []
    finally:
        engine.dispose()
