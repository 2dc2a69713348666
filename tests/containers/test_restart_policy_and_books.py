"""Against the containers of `make test-containers` (deploy/compose.test.yaml), over the network only.

The connects container is SIGKILLed in the middle of a burst of spends; its
restart policy (not the test) brings it back; every spend retried with its
request_id is applied once, the ledger's invariants hold and GetLedgerTotals
counts each Connect once. A purchase through the billing and sandbox-provider
containers credits its Connects once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import sqlalchemy as sa
from adsmon.billing.v1 import billing_pb2 as bpb
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from deploy.run_suite import grpc_serving
from services.kit.auth import mint_token
from tests.conftest import unique
from tests.e2e.billing_support import BillingClient, purchase_credits
from tests.e2e.test_crash_recovery import spend_all
from tests.integration.connects.conftest import assert_books_balance
from tests.integration.kit.support import wait_for
from tests.support.container_stack import ContainerService

pytestmark = pytest.mark.e2e
SPENDS = 300


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class _Killer:
    """What spend_all SIGKILLs (os.kill): the container's main process, seen from the host."""

    def __init__(self, service: ContainerService) -> None:
        self.pid = service.pid
        assert self.pid > 0, f"{service.container} is not running"


def test_a_sigkilled_connects_container_is_restarted_by_its_policy_and_retried_spends_apply_once(
        stack: dict[str, ContainerService], auth_secret: bytes) -> None:
    connects = stack["connects"]
    token = mint_token(auth_secret, "operator")
    md = (("authorization", f"Bearer {token}"),)
    window_start = datetime.now(UTC) - timedelta(seconds=1)
    account = unique("ct-crash")
    with grpc.insecure_channel(connects.target) as ch:
        connects_pb2_grpc.ConnectsServiceStub(ch).Credit(
            pb.CreditRequest(request_id=unique("credit"), account_id=account, amount=1000,
                             source=pb.LOT_SOURCE_BONUS, reference="signup"), metadata=md, timeout=10)
    ids = [f"{account}-spend-{i}" for i in range(SPENDS)]
    restarts = connects.restart_count
    killed = _Killer(connects)

    before = asyncio.run(spend_all(connects.target, token, account, ids, kill_after=SPENDS // 4, proc=killed))
    assert 0 < len(before) < SPENDS, "the SIGKILL should interrupt the burst"

    # Nobody restarts it but the engine's restart policy.
    wait_for(lambda: connects.restart_count > restarts, 30, "restarted by the restart policy")
    wait_for(lambda: grpc_serving(connects.grpc_port), 60, "SERVING again")
    assert connects.pid not in (0, killed.pid)

    after = asyncio.run(spend_all(connects.target, token, account, ids))
    assert len(after) == SPENDS, "every retry must be answered after the restart"
    assert all(after[rid] == tx for rid, tx in before.items()), "a retry must return the first answer"
    assert len(set(after.values())) == SPENDS

    with grpc.insecure_channel(connects.target) as ch:
        stub = connects_pb2_grpc.ConnectsServiceStub(ch)
        balance = stub.GetBalance(pb.GetBalanceRequest(account_id=account), metadata=md, timeout=10)
        window_end = datetime.now(UTC) + timedelta(seconds=1)
        totals = stub.GetLedgerTotals(
            pb.GetLedgerTotalsRequest(start_time=ts(window_start), end_time=ts(window_end)),
            metadata=(("authorization", f"Bearer {mint_token(auth_secret, 'billing')}"),), timeout=10)
    assert balance.available == 1000 - SPENDS
    assert sum(i.connects for i in totals.issued if i.source == pb.LOT_SOURCE_BONUS) == 1000
    assert sum(s.connects for s in totals.spent if s.reason == pb.SPEND_REASON_PROPOSAL) == SPENDS

    engine = sa.create_engine(connects.env["ADSMON_CONNECTS_DATABASE_URL"])
    try:
        assert_books_balance(engine)
        with engine.connect() as conn:
            spends = conn.execute(sa.text(
                "SELECT count(*) FROM ledger_transactions WHERE account_id = :a AND kind = 'SPEND'"),
                {"a": account}).scalar_one()
        assert spends == SPENDS
    finally:
        engine.dispose()


def test_a_purchase_through_the_billing_and_sandbox_containers_credits_its_connects_once(
        stack: dict[str, ContainerService], auth_secret: bytes) -> None:
    billing = stack["billing"]
    wait_for(lambda: grpc_serving(billing.grpc_port), 60, "billing SERVING")  # its connects channel reconnects
    client = BillingClient(billing.target, auth_secret)
    try:
        account, rid = unique("ct-acct"), unique("r")
        first = client.purchase(rid, account, bundle_id="connects-40")
        assert (first.state, first.connects) == (bpb.PURCHASE_STATE_COMPLETED, 40)
        assert client.purchase(rid, account, bundle_id="connects-40") == first
    finally:
        client.close()
    credits = purchase_credits(stack["connects"], auth_secret, account)
    assert [(c.transaction_id, c.amount) for c in credits] == [(first.ledger_transaction_id, 40)]


def test_the_containers_run_as_a_non_root_user(stack: dict[str, ContainerService]) -> None:
    for service in stack.values():
        user = service.inspect("{{.Config.User}}")
        assert user and user.split(":")[0] not in {"0", "root"}, f"{service.container} runs as {user!r}"
