"""Billing's money in, as processes: the sandbox provider, connects and billing on real PostgreSQL and Kafka.

Every purchase credits its Connects exactly once in the real ledger, whatever
fails midway (connects down, billing SIGKILLed, webhooks twice, late, out of
order); a declined card or a refused request charges and credits nothing; two
renewal schedulers on one database grant each cycle once.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from adsmon.billing.v1 import billing_pb2 as bpb
from adsmon.connects.v1 import connects_pb2 as cpb
from adsmon.connects.v1 import connects_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import unique
from tests.e2e.billing_support import (
    BillingClient,
    Sandbox,
    balance,
    billing_settings,
    plan_grants,
    purchase_credits,
    query,
    token,
)
from tests.e2e.conftest import free_port
from tests.e2e.test_walking_skeleton import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def new_sandbox(tmp_path_factory):
    """Factory: a sandbox provider process whose webhooks go to a port of its own (one billing each)."""
    made: list[Sandbox] = []

    def make() -> Sandbox:
        box = Sandbox(free_port(), free_port(), tmp_path_factory.mktemp("sandbox") / "sandbox.log")
        box.start()
        made.append(box)
        return box

    yield make
    for box in made:
        box.stop()


@pytest.fixture(scope="module")
def sandbox(new_sandbox):
    return new_sandbox()


@pytest.fixture(scope="module")
def stack(launch, sandbox, auth_secret):
    connects = launch("connects")
    billing = launch("billing", **billing_settings(connects, sandbox))
    client = BillingClient(billing.target, auth_secret)
    yield {"connects": connects, "billing": billing, "client": client, "sandbox": sandbox}
    client.close()
    billing.stop()  # not left polling beside the later modules' processes
    connects.stop()


def reason_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    status = rpc_status.from_call(exc)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return exc.code(), info.reason, dict(info.metadata)
    return exc.code(), "", {}


def test_a_purchase_credits_its_connects_once_and_a_retry_returns_the_same_purchase(stack, auth_secret):
    client, account, rid = stack["client"], unique("acct"), unique("r")
    p = client.purchase(rid, account, bundle_id="connects-40")
    assert (p.state, p.connects, p.price.amount_minor, p.price.currency_code) == (
        bpb.PURCHASE_STATE_COMPLETED, 40, 600, "USD")
    again = client.purchase(rid, account, bundle_id="connects-40")
    assert again == p
    credits = purchase_credits(stack["connects"], auth_secret, account)
    assert [(c.transaction_id, c.amount, c.reference) for c in credits] == [
        (p.ledger_transaction_id, 40, f"purchase:{p.purchase_id}")]
    assert len(stack["sandbox"].intents(account)) == 1
    assert client.get(p.purchase_id) == p


def test_a_declined_card_credits_nothing_and_names_the_failed_purchase(stack, auth_secret):
    client, account = stack["client"], unique("acct")
    with pytest.raises(grpc.RpcError) as exc:
        client.purchase(unique("r"), account, quantity=7, card="pm_card_declined")
    code, reason, meta = reason_of(exc.value)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_DECLINED")
    failed = client.get(meta["purchase_id"])
    assert (failed.state, failed.failure_reason) == (bpb.PURCHASE_STATE_FAILED, "PAYMENT_DECLINED")
    assert purchase_credits(stack["connects"], auth_secret, account) == []


BAD = [
    ({"bundle_id": "connects-41"}, grpc.StatusCode.NOT_FOUND, "BUNDLE_NOT_FOUND", "bundle_id"),
    ({"bundle_id": "connects-150"}, grpc.StatusCode.NOT_FOUND, "BUNDLE_NOT_FOUND", "bundle_id"),
    ({"quantity": 0}, grpc.StatusCode.INVALID_ARGUMENT, "QUANTITY_OUT_OF_RANGE", "quantity"),
    ({"quantity": -5}, grpc.StatusCode.INVALID_ARGUMENT, "QUANTITY_OUT_OF_RANGE", "quantity"),
    ({"quantity": 10**12}, grpc.StatusCode.INVALID_ARGUMENT, "QUANTITY_OUT_OF_RANGE", "quantity"),
    ({"quantity": 10, "currency_code": "EUR"}, grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_NOT_SUPPORTED",
     "currency_code"),
    ({"quantity": 10, "account_id": "not an account"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD",
     "account_id"),
    ({"quantity": 10, "account_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "account_id"),
    ({"quantity": 10, "card": ""}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "payment_method"),
]


@pytest.mark.parametrize("case, code, reason, field", BAD)
def test_bad_input_gets_a_clear_error_and_charges_nothing(stack, auth_secret, case, code, reason, field):
    client, account = stack["client"], unique("acct")
    args = dict(case)
    account = args.pop("account_id", account)
    with pytest.raises(grpc.RpcError) as exc:
        client.purchase(unique("r"), account, **args)
    got_code, got_reason, meta = reason_of(exc.value)
    assert (got_code, got_reason, meta.get("field")) == (code, reason, field)
    assert stack["sandbox"].intents(account) == []
    if account:
        assert purchase_credits(stack["connects"], auth_secret, account) == []


def test_an_unknown_purchase_is_not_found(stack):
    with pytest.raises(grpc.RpcError) as exc:
        stack["client"].get(unique("nope"))
    assert reason_of(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "PURCHASE_NOT_FOUND")


def test_an_async_capture_completes_once_on_webhooks_delivered_late_and_twice(stack, auth_secret):
    client, account = stack["client"], unique("acct")
    p = client.purchase(unique("r"), account, bundle_id="connects-20", card="pm_card_async")
    assert p.state == bpb.PURCHASE_STATE_PENDING
    done = wait_for(lambda: (q := client.get(p.purchase_id)).state == bpb.PURCHASE_STATE_COMPLETED and q)
    assert done, "the async capture never completed"
    # Every webhook is sent twice, at random delays; then a late failure for the same payment is injected.
    intent_id = _intent(stack, account)
    assert wait_for(lambda: query(stack["billing"], "SELECT 1 FROM provider_events WHERE object_id = :i AND type = "
                                  "'payment_intent.succeeded'", i=intent_id))
    stack["sandbox"].post("/v1/test/events", {"type": "payment_intent.payment_failed", "intent_id": intent_id})
    wait_for(lambda: query(stack["billing"], "SELECT outcome FROM provider_events WHERE object_id = :i AND type = "
                           "'payment_intent.payment_failed'", i=intent_id))
    outcomes = dict(query(stack["billing"], "SELECT type, outcome FROM provider_events WHERE object_id = :i",
                          i=intent_id))
    assert outcomes["payment_intent.payment_failed"] == "IGNORED"
    assert client.get(p.purchase_id).state == bpb.PURCHASE_STATE_COMPLETED
    assert [c.amount for c in purchase_credits(stack["connects"], auth_secret, account)] == [20]


def _intent(stack, account: str) -> str:
    (intent,) = stack["sandbox"].intents(account)
    return str(intent["intent_id"])


def test_connects_down_midway_leaves_purchases_pending_then_credits_each_once(launch, new_sandbox, auth_secret):
    sandbox = new_sandbox()
    connects = launch("connects")
    billing = launch("billing", **billing_settings(connects, sandbox))
    client = BillingClient(billing.target, auth_secret)
    account = unique("acct")
    try:
        connects.stop()
        pending = [client.purchase(unique("r"), account, quantity=5) for _ in range(5)]
        assert {p.state for p in pending} == {bpb.PURCHASE_STATE_PENDING}
        connects.start()
        assert wait_for(lambda: all(client.get(p.purchase_id).state == bpb.PURCHASE_STATE_COMPLETED
                                    for p in pending), timeout=60)
        credits = purchase_credits(connects, auth_secret, account)
        assert Counter(c.reference for c in credits) == {f"purchase:{p.purchase_id}": 1 for p in pending}
        assert balance(connects, auth_secret, account) == 25
        assert len(sandbox.intents(account)) == 5
    finally:
        client.close()
        billing.stop()
        connects.stop()


def test_billing_killed_midway_resumes_on_restart_and_credits_each_purchase_once(launch, new_sandbox, auth_secret):
    sandbox = new_sandbox()
    connects = launch("connects")
    billing = launch("billing", **billing_settings(connects, sandbox))
    account, n = unique("acct"), 60
    rids = [unique("r") for _ in range(n)]
    cards = ["pm_card_async" if i % 3 == 0 else "pm_card_visa" for i in range(n)]
    answered: dict[str, str] = {}
    killed = threading.Event()
    client = BillingClient(billing.target, auth_secret)

    def buy(i: int) -> None:
        try:
            p = client.purchase(rids[i], account, quantity=1 + i % 4, card=cards[i], timeout=10)
            answered[rids[i]] = p.purchase_id
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                  grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN), exc
        if len(answered) >= n // 4 and not killed.is_set():
            killed.set()
            os.kill(billing.proc.pid, signal.SIGKILL)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(buy, range(n)))
    client.close()
    assert killed.is_set() and len(answered) < n
    billing.proc.wait(10)
    billing.start()  # same database, same ports: the resumer finds what was left PENDING
    client = BillingClient(billing.target, auth_secret)
    try:
        finals = {}
        for i, rid in enumerate(rids):  # the client retries every request with its request_id
            p = client.purchase(rid, account, quantity=1 + i % 4, card=cards[i])
            finals[rid] = p.purchase_id
            if rid in answered:
                assert answered[rid] == p.purchase_id
        assert wait_for(lambda: all(client.get(pid).state == bpb.PURCHASE_STATE_COMPLETED
                                    for pid in finals.values()), timeout=60)
        credits = purchase_credits(connects, auth_secret, account)
        assert Counter(c.reference for c in credits) == {f"purchase:{pid}": 1 for pid in finals.values()}
        assert balance(connects, auth_secret, account) == sum(1 + i % 4 for i in range(n))
        assert len(sandbox.intents(account)) == n  # one payment per purchase, never two
    finally:
        client.close()
        billing.stop()
        connects.stop()


def test_two_renewal_schedulers_on_one_database_grant_each_cycle_once(launch, new_sandbox, auth_secret):
    sandbox = new_sandbox()
    connects = launch("connects")
    first = launch("billing", **billing_settings(connects, sandbox))
    second = launch("billing", **billing_settings(connects, sandbox, ADSMON_BILLING_WEBHOOK_PORT=str(free_port()),
                                                  ADSMON_BILLING_DATABASE_URL=first.env["ADSMON_BILLING_DATABASE_URL"]))
    client = BillingClient(first.target, auth_secret)
    accounts = [unique("acct") for _ in range(12)]
    try:
        for account in accounts:
            client.stub.StartMembership(bpb.StartMembershipRequest(
                request_id=unique("r"), account_id=account, plan=bpb.PLAN_FREELANCER_PLUS,
                payment_method="pm_card_visa"), metadata=token(auth_secret), timeout=20)
        # Two months pass: move every membership's anchor and period back (cycles 2 and 3 are due).
        query(first, "UPDATE memberships SET anchor = anchor - interval '2 months', "
                     "period_start = period_start - interval '2 months', period_end = period_end - interval '2 months'")
        query(first, "UPDATE membership_cycles SET period_start = period_start - interval '2 months', "
                     "period_end = period_end - interval '2 months'")
        granted = wait_for(lambda: query(first, "SELECT count(*) FROM membership_cycles WHERE state = 'GRANTED'")[0][0]
                           == 3 * len(accounts), timeout=60)
        assert granted, query(first, "SELECT m.account_id, m.cycle, m.period_end, c.cycle, c.state, c.failure_reason "
                                     "FROM memberships m JOIN membership_cycles c USING (membership_id) LIMIT 6")
        for account in accounts:
            credits = plan_grants(connects, auth_secret, account)
            assert sorted(c.reference.rsplit(":", 1)[1] for c in credits) == ["1", "2", "3"]
            assert sum(c.amount for c in credits) == 300
            assert len(sandbox.intents(account)) == 3
        cycles = query(first, "SELECT membership_id, cycle, count(*) FROM membership_cycles GROUP BY 1, 2")
        assert {n for _, _, n in cycles} == {1}
    finally:
        client.close()
        second.stop()
        first.stop()
        connects.stop()


def test_a_chargeback_claws_back_the_unspent_connects_in_the_ledger_and_books_the_spent_as_loss(stack, auth_secret):
    client, account = stack["client"], unique("acct")
    p = client.purchase(unique("r"), account, bundle_id="connects-60")
    with grpc.insecure_channel(stack["connects"].target) as ch:
        connects_pb2_grpc.ConnectsServiceStub(ch).Spend(cpb.SpendRequest(
            request_id=unique("r"), account_id=account, amount=22, reason=cpb.SPEND_REASON_PROPOSAL,
            reference="job:j1"), metadata=token(auth_secret), timeout=10)
    rid = unique("r")
    request = bpb.RecordChargebackRequest(request_id=rid, purchase_id=p.purchase_id, provider_reference="dp_1",
                                          reason="fraudulent")
    cb = client.stub.RecordChargeback(request, metadata=client.md, timeout=20).chargeback
    assert (cb.connects_removed, cb.connects_already_spent, cb.loss.amount_minor) == (38, 22, 330)
    assert client.stub.RecordChargeback(request, metadata=client.md, timeout=20).chargeback == cb
    with pytest.raises(grpc.RpcError) as exc:
        client.stub.RecordChargeback(bpb.RecordChargebackRequest(
            request_id=unique("r"), purchase_id=p.purchase_id, provider_reference="dp_2"), metadata=client.md,
            timeout=20)
    assert reason_of(exc.value)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "CHARGEBACK_ALREADY_RECORDED")
    assert balance(stack["connects"], auth_secret, account) == 0
    assert client.get(p.purchase_id).state == bpb.PURCHASE_STATE_CHARGED_BACK


def test_a_provider_dispute_webhook_records_the_chargeback(stack, auth_secret):
    client, account = stack["client"], unique("acct")
    p = client.purchase(unique("r"), account, bundle_id="connects-10")
    stack["sandbox"].post("/v1/disputes", {"intent_id": _intent(stack, account)})
    assert wait_for(lambda: client.get(p.purchase_id).state == bpb.PURCHASE_STATE_CHARGED_BACK)
    assert balance(stack["connects"], auth_secret, account) == 0
    rows = query(stack["billing"], "SELECT state, connects_removed FROM chargebacks WHERE purchase_id = :p",
                 p=p.purchase_id)
    assert [tuple(r) for r in rows] == [("RECORDED", 10)]
