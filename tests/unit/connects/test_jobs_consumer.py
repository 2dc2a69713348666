"""The automatic return of a cancelled or removed job's spends (the jobs consumer on SQLite)."""

from __future__ import annotations

import pytest
from adsmon.marketplace.v1 import jobs_pb2
from sqlalchemy.engine import Engine

from services.connects.adapters.repository import SqlAlchemyLedgerQueries, SqlAlchemyLedgerUnitOfWork
from services.connects.bootstrap import jobs_handler
from services.connects.domain import commands as c
from services.connects.domain.model import LotSource, ReturnReason, SpendReason
from services.connects.service_layer import handlers, queries, returns
from services.connects.service_layer.handlers import Envelope
from services.kit.errors import DomainError, InvalidArgument
from services.kit.kafka import make_event
from tests.conftest import unique
from tests.unit.connects.conftest import NOW, credit, ok, sql_run


def cancel_job(engine: Engine, job: str) -> None:
    handle = jobs_handler(lambda: NOW, handlers.NullMetrics())
    event = make_event(jobs_pb2.JobCancelled(job_id=job), job, "marketplace")
    with engine.begin() as conn:
        handle(conn, event, None)


def test_a_client_request_id_cannot_block_the_automatic_return_of_a_cancelled_job(sqlite_engine):
    acct, job = unique("a"), unique("job")
    ok(sql_run(sqlite_engine, credit(acct, 10))[0])
    spend = ok(sql_run(sqlite_engine, c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL, f"job:{job}"))[0])
    tx_id = spend.transaction.transaction_id
    # A client can name the id the consumer will derive, but no client command may use the reserved namespace.
    client_id = str(returns.return_request_id(tx_id))
    assert client_id.startswith(c.RESERVED_REQUEST_ID_PREFIX)
    with pytest.raises(InvalidArgument) as exc:
        c.Credit(client_id, unique("other"), 1, LotSource.BONUS)
    assert (exc.value.reason, exc.value.metadata["field"]) == ("RESERVED_REQUEST_ID", "request_id")
    # The old derived id is an ordinary client id now, and taking it blocks nothing.
    ok(sql_run(sqlite_engine, c.Credit(f"job-return:{tx_id}", unique("other"), 1, LotSource.BONUS))[0])
    cancel_job(sqlite_engine, job)
    balance = queries.get_balance(SqlAlchemyLedgerQueries(sqlite_engine), acct, NOW)
    assert balance.available == 10, "the cancelled job's proposal spend was returned"


def test_the_jobs_consumer_dead_letters_an_event_whose_return_is_refused_unexpectedly(sqlite_engine):
    """If a return is refused for a reason that is not a business answer (here: its internal request id was
    taken, as by data from before the reserved namespace), nothing commits and the error is raised for the
    kit's consumer to dead-letter, instead of the event being marked processed with Connects unreturned."""
    acct, job = unique("a"), unique("job")
    ok(sql_run(sqlite_engine, credit(acct, 10))[0])
    spend = ok(sql_run(sqlite_engine, c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL, f"job:{job}"))[0])
    tx_id = spend.transaction.transaction_id
    ok(sql_run(sqlite_engine, c.Credit(returns.return_request_id(tx_id), unique("other"), 1,
                                       LotSource.BONUS), caller="connects")[0])
    with pytest.raises(DomainError) as exc:
        cancel_job(sqlite_engine, job)
    assert exc.value.reason == "REQUEST_ID_REUSED"
    qs = SqlAlchemyLedgerQueries(sqlite_engine)
    assert queries.get_balance(qs, acct, NOW).available == 6
    assert [t.transaction_id for t in qs.job_transactions(job)] == [tx_id], "still to be returned"


def test_the_jobs_consumer_skips_a_transaction_returned_meanwhile_and_returns_the_others(sqlite_engine, monkeypatch):
    acct, job = unique("a"), unique("job")
    ok(sql_run(sqlite_engine, credit(acct, 10))[0])
    first = ok(sql_run(sqlite_engine, c.Spend(unique("r"), acct, 2, SpendReason.PROPOSAL, f"job:{job}"))[0])
    ok(sql_run(sqlite_engine, c.Spend(unique("r"), acct, 3, SpendReason.PROPOSAL, f"job:{job}/p2"))[0])
    returned = c.ReturnConnects(unique("r"), first.transaction.transaction_id, ReturnReason.JOB_REMOVED_TOS)
    handle = jobs_handler(lambda: NOW, handlers.NullMetrics())
    event = make_event(jobs_pb2.JobCancelled(job_id=job), job, "marketplace")
    with sqlite_engine.begin() as conn:
        # The RPC return lands after the consumer read the job's transactions, before it returns them.
        txs = SqlAlchemyLedgerQueries(connection=conn).job_transactions(job)
        assert len(txs) == 2
        ok(handlers.execute(SqlAlchemyLedgerUnitOfWork(connection=conn), [Envelope(returned, "marketplace")],
                            NOW)[0])
        monkeypatch.setattr(SqlAlchemyLedgerQueries, "job_transactions", lambda self, job_id: txs)
        handle(conn, event, None)
    assert queries.get_balance(SqlAlchemyLedgerQueries(sqlite_engine), acct, NOW).available == 10
