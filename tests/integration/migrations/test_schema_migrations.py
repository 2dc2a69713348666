"""Alembic migrations of every service, on PostgreSQL and SQLite: from an empty database, from the schema the
former kit.db migrator left (frozen DDL in tests/support/legacy), and with several starters at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.ads.adapters.migrations import MIGRATIONS as ADS
from services.billing.adapters.migrations import MIGRATIONS as BILLING
from services.connects.adapters.migrations import MIGRATIONS as CONNECTS
from services.kit.db import make_engine
from services.kit.migrations import PURGE_INDEX, Migrations, current_revision, upgrade
from services.kit.outbox import OUTBOX

pytestmark = pytest.mark.integration

LEGACY_DIR = Path(__file__).resolve().parents[2] / "support" / "legacy"
SERVICES = {"connects": CONNECTS, "billing": BILLING, "ads": ADS}
LEGACY_VERSIONS = {"connects": 4, "billing": 4, "ads": 1}  # what the former migrator had applied


@pytest.fixture(params=["postgresql", "sqlite"])
def new_engine(request, create_database, tmp_path) -> Iterator[Callable[[], sa.Engine]]:
    engines: list[sa.Engine] = []

    def make() -> sa.Engine:
        if request.param == "postgresql":
            url = create_database("migrations")
        else:
            url = f"sqlite:///{tmp_path}/db{len(engines)}.sqlite"
        engines.append(make_engine(url, pool_size=5))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


def schema_differences(engine: sa.Engine, migrations: Migrations) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, list(migrations.target_metadata)))


def build_legacy_schema(engine: sa.Engine, service: str, *, version: int | None = None,
                        skip: tuple[str, ...] = ()) -> None:
    """The schema and schema_migrations rows the former migrator left (statements naming `skip` left out)."""
    lines = (LEGACY_DIR / f"{service}.{engine.dialect.name}.sql").read_text().splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    statements = [s.strip() for s in ddl.split(";\n") if s.strip()]
    version = version or LEGACY_VERSIONS[service]
    with engine.begin() as conn:
        for statement in statements:
            if not any(name in statement for name in skip):
                conn.exec_driver_sql(statement)
        for v in range(1, version + 1):
            conn.exec_driver_sql(f"INSERT INTO schema_migrations (service, version, name) "
                                 f"VALUES ('{service}', {v}, 'v{v}')")


def revision_of(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return current_revision(conn)


@pytest.mark.parametrize("service", SERVICES)
def test_an_empty_database_is_migrated_to_exactly_the_tables_the_code_uses(new_engine, service):
    engine, migrations = new_engine(), SERVICES[service]
    assert upgrade(engine, migrations) == (None, migrations.head())
    assert schema_differences(engine, migrations) == []
    assert upgrade(engine, migrations) == (migrations.head(), migrations.head()), "a second run does nothing"


@pytest.mark.parametrize("service", SERVICES)
def test_a_database_at_the_former_migrators_schema_is_adopted_and_keeps_its_rows(new_engine, service):
    engine, migrations = new_engine(), SERVICES[service]
    build_legacy_schema(engine, service)
    with engine.begin() as conn:
        conn.execute(OUTBOX.insert().values(event_id="e-1", topic="t", key="k", payload=b"x",
                                            created_at=datetime.now(UTC)))
    before, after = upgrade(engine, migrations)
    assert (before, after) == (migrations.legacy[LEGACY_VERSIONS[service]], migrations.head())
    assert schema_differences(engine, migrations) == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(OUTBOX.c.event_id)).scalars().all() == ["e-1"]


def test_a_former_schema_at_version_3_is_upgraded_with_the_purge_index(new_engine):
    engine = new_engine()
    build_legacy_schema(engine, "connects", version=3, skip=(PURGE_INDEX,))
    assert PURGE_INDEX not in {i["name"] for i in sa.inspect(engine).get_indexes("processed_events")}
    assert upgrade(engine, CONNECTS) == ("0003", CONNECTS.head())
    assert PURGE_INDEX in {i["name"] for i in sa.inspect(engine).get_indexes("processed_events")}
    assert schema_differences(engine, CONNECTS) == []


def test_servers_starting_at_once_migrate_one_at_a_time_and_all_start(new_engine):
    first = new_engine()
    engines = [first] + [make_engine(first.url.render_as_string(hide_password=False), pool_size=2)
                         for _ in range(3)]
    barrier = threading.Barrier(len(engines))
    results: list[tuple[str | None, str | None]] = []
    errors: list[BaseException] = []

    def start(engine: sa.Engine) -> None:
        barrier.wait()
        try:
            results.append(upgrade(engine, CONNECTS))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for engine in engines[1:]:
        engine.dispose()
    assert errors == []
    head = CONNECTS.head()
    assert sorted(results, key=str) == sorted([(None, head)] + [(head, head)] * 3, key=str), \
        "exactly one starter migrated; the others found the schema at the newest revision"
    assert revision_of(first) == head
    assert schema_differences(first, CONNECTS) == []


def test_a_former_version_no_revision_matches_is_one_clear_startup_error(new_engine):
    from services.kit.startup import StartupError

    engine = new_engine()
    build_legacy_schema(engine, "ads")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO schema_migrations (service, version, name) VALUES ('ads', 2, 'v2')")
    with pytest.raises(StartupError, match="schema_migrations version 2"):
        upgrade(engine, ADS)
    assert revision_of(engine) is None, "nothing was stamped"
