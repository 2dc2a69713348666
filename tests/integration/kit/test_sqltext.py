"""kit.sqltext on real PostgreSQL: a statement's text compiled once, with its fixed values and bind processing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from services.kit import sqltext

pytestmark = pytest.mark.integration

T = sa.Table("sqltext_t", sa.MetaData(), sa.Column("k", sa.Text, primary_key=True), sa.Column("v", sa.BigInteger),
             sa.Column("flag", sa.Boolean), sa.Column("state", sa.Text))
UPSERT = postgresql.insert(T).values(k=sa.bindparam("k"), v=sa.bindparam("v"), flag=sa.bindparam("flag"),
                                     state="NEW")
UPSERT = UPSERT.on_conflict_do_update(index_elements=["k"], set_={"v": UPSERT.excluded.v},
                                      where=T.c.state != "DONE").returning(T.c.k)


def test_an_upsert_runs_as_its_sqlalchemy_form_says_with_its_fixed_values_and_processors(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        T.create(conn)
        assert sqltext.execute(conn, UPSERT, {"k": "a", "v": 1, "flag": True}).scalar_one() == "a"
        assert sqltext.execute(conn, UPSERT, {"k": "a", "v": 2, "flag": True}).scalar_one() == "a"  # updated
        conn.execute(T.update().values(state="DONE"))
        assert sqltext.execute(conn, UPSERT, {"k": "a", "v": 3, "flag": True}).first() is None  # the WHERE holds
        with pytest.raises(TypeError):  # Boolean's processor checks the value, as conn.execute would
            sqltext.execute(conn, UPSERT, {"k": "b", "v": 1, "flag": "yes"})
    with engine.connect() as conn:
        assert conn.execute(sa.select(T.c.k, T.c.v, T.c.flag, T.c.state)).all() == [("a", 2, True, "DONE")]


def test_the_text_is_compiled_once_per_statement_and_dialect(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        first = sqltext.compiled(UPSERT, conn)
        assert sqltext.compiled(UPSERT, conn)[0] is first[0]  # the same text object: not compiled again
        assert set(first[1].values()) == {"NEW", "DONE"}  # the values the statement fixes itself
        with pytest.raises(ValueError, match="expanding"):
            sqltext.compiled(sa.select(T).where(T.c.k.in_(["a", "b"])), conn)
