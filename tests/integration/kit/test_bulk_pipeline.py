"""kit.bulk.pg_pipeline on real PostgreSQL: statements run in order, errors surface as SQLAlchemy's own."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from services.kit import bulk

pytestmark = pytest.mark.integration

T = sa.Table("pipeline_t", sa.MetaData(), sa.Column("k", sa.Text, primary_key=True), sa.Column("v", sa.BigInteger))


def test_a_pipeline_runs_in_order_in_the_connections_transaction_and_rolls_back_with_it(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        T.create(conn)
    with engine.connect() as conn:
        conn.begin()
        with bulk.pg_pipeline(conn) as p:
            p.insert_rows(T, [{"k": "a", "v": 1}, {"k": "b", "v": 2}])
            p.update_rows(T, "k", [{"k": "a", "v": 10}])
            rows = p.query("SELECT k, v FROM pipeline_t ORDER BY k")
        assert [(r.k, r.v) for r in rows] == [("a", 10), ("b", 2)]
        conn.rollback()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(T)).scalar_one() == 0


def test_a_failed_statement_raises_sqlalchemys_error_and_the_transaction_can_roll_back(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        T.create(conn)
        conn.execute(T.insert(), [{"k": "a", "v": 1}])
    with engine.connect() as conn:
        conn.begin()
        with pytest.raises(sa.exc.IntegrityError), bulk.pg_pipeline(conn) as p:
            p.insert_rows(T, [{"k": "b", "v": 2}])
            p.insert_rows(T, [{"k": "a", "v": 3}])
            p.insert_rows(T, [{"k": "c", "v": 4}])
        conn.rollback()
        assert conn.execute(sa.select(T.c.k).order_by(T.c.k)).scalars().all() == ["a"]


def test_a_lost_connection_raises_an_operational_error_and_is_invalidated(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        conn.rollback()
        with engine.connect() as killer:
            killer.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,))
            killer.commit()
        conn.begin()
        with pytest.raises(sa.exc.OperationalError) as raised, bulk.pg_pipeline(conn) as p:
            p.query("SELECT 1")
        assert raised.value.connection_invalidated
        assert conn.invalidated
        conn.rollback()
    with engine.connect() as conn:  # the pool hands out a working connection again
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
