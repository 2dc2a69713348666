"""Schema migrations with Alembic: one migration environment per service, run at start-up and by `migrate`.

Each service keeps its environment in `services/<svc>/adapters/migrations/`:

    __init__.py     MIGRATIONS = Migrations(service, Path(__file__).parent, [metadata...], legacy={...})
    env.py          run_env(MIGRATIONS)  (the same two lines in every service)
    script.py.mako  the template `alembic revision` fills in
    versions/       one file per schema change, oldest first; never edit a shipped one, add the next

`upgrade(engine, migrations)` brings a database to the newest revision. It runs
every pending revision in one transaction that first takes a lock, so servers
starting at once migrate one at a time (the others then find nothing to do):
on PostgreSQL a transaction-scoped advisory lock, on SQLite the BEGIN IMMEDIATE
writer lock. A database migrated before Alembic (the `schema_migrations` table
of the kit's former migrator) is adopted: stamped with the revision matching its
last version (its rows then leave `schema_migrations`, and the table once
empty), then upgraded from there.

Revisions write their DDL out in full (op.create_table with every column), never
from the live SQLAlchemy tables: a revision must create tomorrow what it created
the day it shipped. The kit's own tables (outbox, processed_events) have their
frozen DDL here, for the services' revisions to call.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from services.kit.db import is_postgres
from services.kit.startup import StartupError

log = logging.getLogger(__name__)

LEGACY_TABLE = "schema_migrations"
_legacy = sa.table(LEGACY_TABLE, sa.column("service", sa.String), sa.column("version", sa.Integer))


@dataclass(frozen=True)
class Migrations:
    """A service's migration environment."""

    service: str
    script_location: Path
    target_metadata: Sequence[sa.MetaData]  # what the newest revision must produce (checked by the tests)
    # version in the former schema_migrations table -> the revision that leaves the same schema
    legacy: Mapping[int, str] = field(default_factory=dict)

    def config(self, connection: Connection | None = None) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.script_location))
        cfg.attributes["connection"] = connection
        cfg.attributes["migrations"] = self
        return cfg

    def head(self) -> str:
        head = ScriptDirectory.from_config(self.config()).get_current_head()
        if head is None:
            raise RuntimeError(f"{self.service} has no migration revisions")
        return head


def _lock_key(service: str) -> int:
    return int.from_bytes(hashlib.sha256(f"migrate:{service}".encode()).digest()[:8], "big", signed=True)


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, migrations: Migrations, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply the pending revisions (safe to run concurrently); returns (revision before, revision after)."""
    with engine.begin() as conn:
        if is_postgres(conn):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(migrations.service)})
        _adopt_legacy(conn, migrations)
        before = current_revision(conn)
        command.upgrade(migrations.config(conn), revision)
        after = current_revision(conn)
    if before != after:
        log.info("migrated %s from %s to %s", migrations.service, before or "an empty database", after)
    return before, after


def _adopt_legacy(conn: Connection, migrations: Migrations) -> None:
    """Stamp a database migrated by the former migrator with the revision its version matches."""
    inspector = sa.inspect(conn)
    if inspector.has_table("alembic_version") or not inspector.has_table(LEGACY_TABLE):
        return
    version = conn.execute(sa.select(sa.func.max(_legacy.c.version))
                           .where(_legacy.c.service == migrations.service)).scalar()
    if version is None:
        return
    if version not in migrations.legacy:
        raise StartupError(f"the {migrations.service} database is at schema_migrations version {version}, "
                           "which no Alembic revision matches (add it to the service's legacy map)")
    revision = migrations.legacy[version]
    log.info("adopting %s schema_migrations version %d as revision %s", migrations.service, version, revision)
    command.stamp(migrations.config(conn), revision)
    # Alembic's version table replaces this service's rows; the table goes once no service is left in it.
    conn.execute(sa.delete(_legacy).where(_legacy.c.service == migrations.service))
    if conn.execute(sa.select(sa.func.count()).select_from(_legacy)).scalar() == 0:
        conn.execute(sa.text(f"DROP TABLE {LEGACY_TABLE}"))


def run_env() -> None:
    """The body of every service's env.py: run the migrations on the connection `upgrade` passed in."""
    cfg = context.config
    migrations: Migrations = cfg.attributes["migrations"]
    connection: Connection | None = cfg.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through services.kit.migrations.upgrade (or `python -m services.<svc> "
                           "migrate`), which passes the locked connection")
    context.configure(connection=connection, target_metadata=list(migrations.target_metadata),
                      render_as_batch=True,  # SQLite alters tables by copying them (op.batch_alter_table)
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def draft_revision(migrations: Migrations, message: str) -> Path:
    """Write a new revision file whose upgrade() is what the tables lack against the newest revision.

    Autogenerated on a scratch SQLite database: a draft to read and correct (PostgreSQL-only types,
    server defaults, data moves), never to ship unread.
    """
    head = migrations.head()
    rev_id = f"{int(head) + 1:04d}" if head.isdigit() else None
    engine = sa.create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            cfg = migrations.config(conn)
            command.upgrade(cfg, "head")
            script = command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)
    finally:
        engine.dispose()
    if script is None or isinstance(script, list):
        raise RuntimeError("alembic wrote no single revision")
    return Path(script.path)


def main(argv: Sequence[str]) -> int:
    """`python -m services.kit.migrations draft <service> <message>`: draft the next revision of a service."""
    if len(argv) != 3 or argv[0] != "draft":
        print("usage: python -m services.kit.migrations draft <connects|ads|billing> <message>", file=sys.stderr)
        return 2
    service, message = argv[1], argv[2]
    try:
        module = importlib.import_module(f"services.{service}.adapters.migrations")
    except ModuleNotFoundError:
        print(f"migrations: no service {service!r}", file=sys.stderr)
        return 2
    path = draft_revision(module.MIGRATIONS, message)
    print(f"{path}: read it, write the DDL out in full where the draft is wrong, then test it")
    return 0


# -- the kit's tables, frozen for the services' revisions ------------------------------------------

def create_outbox_table() -> None:
    """The outbox as it first shipped (services.kit.outbox)."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
        sqlite_autoincrement=True,
    )
    unpublished = sa.text("published_at IS NULL")
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"], unique=False)
    op.create_index("ix_outbox_unpublished", "outbox", ["id"], unique=False,
                    postgresql_where=unpublished, sqlite_where=unpublished)
    op.create_index("ix_outbox_unpublished_key", "outbox", ["key", "id"], unique=False,
                    postgresql_where=unpublished, sqlite_where=unpublished)


def create_processed_events_table() -> None:
    """processed_events as it first shipped (services.kit.consumer), before its purge index."""
    op.create_table(
        "processed_events",
        sa.Column("consumer_group", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer_group", "event_id"),
    )


PURGE_INDEX = "ix_processed_events_group_processed_at"


def create_processed_events_purge_index() -> None:
    """The index the retention purge deletes by (group, age). A table the former migrator created from
    newer metadata may have it already."""
    existing = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("processed_events")}
    if PURGE_INDEX not in existing:
        op.create_index(PURGE_INDEX, "processed_events", ["consumer_group", "processed_at"], unique=False)


def drop_processed_events_purge_index() -> None:
    op.drop_index(PURGE_INDEX, table_name="processed_events")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
