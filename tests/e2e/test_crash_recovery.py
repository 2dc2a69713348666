"""SIGKILL the ledger in the middle of a burst of spends, restart it, retry everything.

Every spend is applied exactly once (the retries return the first answers),
the books balance, and every committed transaction reaches Kafka.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import grpc
import pytest
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc
from kafka import KafkaConsumer

from services.connects.adapters.topics import LEDGER
from services.kit.auth import mint_token
from services.kit.kafka import decode_event, decode_payload
from tests.conftest import unique
from tests.integration.connects.conftest import assert_books_balance

pytestmark = pytest.mark.e2e
SPENDS = 300


async def spend_all(target: str, token: str, account: str, ids: list[str], *, kill_after: int | None = None,
                    proc=None) -> dict[str, str]:
    """Send every spend (32 at a time); return request_id -> transaction_id for those answered OK."""
    answers: dict[str, str] = {}
    gate = asyncio.Semaphore(32)
    async with grpc.aio.insecure_channel(target) as ch:
        stub = connects_pb2_grpc.ConnectsServiceStub(ch)

        async def one(rid: str) -> None:
            async with gate:
                try:
                    reply = await stub.Spend(
                        pb.SpendRequest(request_id=rid, account_id=account, amount=1,
                                        reason=pb.SPEND_REASON_PROPOSAL, reference=f"job:{rid}"),
                        metadata=(("authorization", f"Bearer {token}"),), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    # A killed server answers nothing more: its calls end UNAVAILABLE (connection lost), never
                    # with an answer that could be wrong.
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    return
                answers[rid] = reply.transaction.transaction_id
                if kill_after is not None and len(answers) == kill_after:
                    os.kill(proc.pid, signal.SIGKILL)

        await asyncio.gather(*(one(rid) for rid in ids))
    return answers


def test_sigkill_mid_burst_then_retry_applies_every_spend_exactly_once(launch, auth_secret, kafka_bootstrap):
    connects = launch("connects")
    token = mint_token(auth_secret, "operator")
    account = unique("crash")
    with grpc.insecure_channel(connects.target) as ch:
        connects_pb2_grpc.ConnectsServiceStub(ch).Credit(
            pb.CreditRequest(request_id=unique("credit"), account_id=account, amount=1000,
                             source=pb.LOT_SOURCE_BONUS, reference="signup"),
            metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    ids = [f"{account}-spend-{i}" for i in range(SPENDS)]

    before = asyncio.run(spend_all(connects.target, token, account, ids, kill_after=SPENDS // 4,
                                   proc=connects.proc))
    assert connects.proc.wait(timeout=10) == -signal.SIGKILL
    assert 0 < len(before) < SPENDS, "the crash should interrupt the burst"

    connects.start()  # same database, same ports
    after = asyncio.run(spend_all(connects.target, token, account, ids))
    assert len(after) == SPENDS, "every retry must be answered after the restart"
    assert all(after[rid] == tx for rid, tx in before.items()), "a retry must return the first answer"
    assert len(set(after.values())) == SPENDS

    with grpc.insecure_channel(connects.target) as ch:
        balance = connects_pb2_grpc.ConnectsServiceStub(ch).GetBalance(
            pb.GetBalanceRequest(account_id=account), metadata=(("authorization", f"Bearer {token}"),))
    assert balance.available == 1000 - SPENDS

    engine = sa.create_engine(connects.env["ADSMON_CONNECTS_DATABASE_URL"])
    try:
        assert_books_balance(engine)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                unpublished = conn.execute(sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar()
            if unpublished == 0:
                break
            time.sleep(0.5)
        assert unpublished == 0, "committed events left unpublished"
    finally:
        engine.dispose()

    topic = os.environ["ADSMON_KAFKA_TOPIC_PREFIX"] + LEDGER
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        seen = set()
        for record in consumer:
            if record.key == account.encode():
                seen.add(decode_payload(decode_event(record.value), [_ledger_event_type()]).transaction_id)
    finally:
        consumer.close()
    assert seen == set(after.values()) | _credit_ids(connects, account)


def _ledger_event_type():
    from adsmon.connects.v1 import events_pb2
    return events_pb2.LedgerTransactionRecorded


def _credit_ids(connects, account: str) -> set[str]:
    engine = sa.create_engine(connects.env["ADSMON_CONNECTS_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.text(
                "SELECT transaction_id FROM ledger_transactions WHERE account_id = :a AND kind = 'CREDIT'"),
                {"a": account})}
    finally:
        engine.dispose()
