"""The Connects client's outgoing-call discipline, against a fake ConnectsService on a real gRPC server.

Retries with backoff and full jitter on UNAVAILABLE only for requests that carry a request_id; every call
carries a deadline.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc

from services.connects.client import GrpcConnectsClient
from services.kit import errors

SECRET = b"r" * 48


class FlakyLedger(connects_pb2_grpc.ConnectsServiceServicer):
    """Fails the first `failures` calls of each method with UNAVAILABLE, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.deadlines: list[float | None] = []
        self.lock = threading.Lock()

    def _attempt(self, method: str, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            self.deadlines.append(context.time_remaining())
            failing = self.calls[method] <= self.failures
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "ledger restarting")

    def Spend(self, request: pb.SpendRequest, context: grpc.ServicerContext) -> pb.SpendResponse:
        self._attempt("Spend", context)
        return pb.SpendResponse(transaction=pb.LedgerTransaction(transaction_id=f"tx-{request.request_id}"))

    def GetBalance(self, request: pb.GetBalanceRequest, context: grpc.ServicerContext) -> pb.GetBalanceResponse:
        self._attempt("GetBalance", context)
        return pb.GetBalanceResponse(account_id=request.account_id, available=7)


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Iterator[tuple[FlakyLedger, str]]:
    servicer = FlakyLedger(failures=request.param)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    connects_pb2_grpc.add_ConnectsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def client(target: str, sleeps: list[float], **options: Any) -> GrpcConnectsClient:
    return GrpcConnectsClient(target, secret=SECRET, caller="ads", timeout=2.0, sleep=sleeps.append, **options)


@pytest.mark.parametrize("ledger", [2], indirect=True)
def test_a_spend_that_fails_twice_with_unavailable_is_retried_with_jittered_backoff_and_succeeds(ledger):
    servicer, target = ledger
    sleeps: list[float] = []
    request_id = str(uuid.uuid4())
    c = client(target, sleeps, backoff_initial=0.05, backoff_max=1.0)
    try:
        move = c.spend(request_id, "acct", 5, "BOOST", "job-1")
    finally:
        c.close()
    assert servicer.calls["Spend"] == 3
    assert move.transaction_id == f"tx-{request_id}"
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.05 and 0 <= sleeps[1] <= 0.1  # full jitter under a doubling cap


@pytest.mark.parametrize("ledger", [10], indirect=True)
def test_a_spend_still_unavailable_after_its_attempts_is_ledger_unavailable(ledger):
    servicer, target = ledger
    c = client(target, [], attempts=4)
    try:
        with pytest.raises(errors.Unavailable) as caught:
            c.spend(str(uuid.uuid4()), "acct", 5, "BOOST", "job-1")
    finally:
        c.close()
    assert servicer.calls["Spend"] == 4
    assert caught.value.reason == "LEDGER_UNAVAILABLE"


@pytest.mark.parametrize("ledger", [1], indirect=True)
def test_a_get_balance_without_a_request_id_is_not_retried(ledger):
    servicer, target = ledger
    sleeps: list[float] = []
    c = client(target, sleeps)
    try:
        with pytest.raises(errors.Unavailable):
            c.balance("acct")
        assert c.balance("acct").available == 7  # the next call (not a retry) is answered
    finally:
        c.close()
    assert servicer.calls["GetBalance"] == 2
    assert sleeps == []


@pytest.mark.parametrize("ledger", [0], indirect=True)
def test_every_outgoing_call_carries_a_deadline(ledger):
    servicer, target = ledger
    c = client(target, [])
    try:
        c.balance("acct")
        c.spend(str(uuid.uuid4()), "acct", 1, "BOOST", "job-1")
    finally:
        c.close()
    assert len(servicer.deadlines) == 2
    # The server reads the deadline back from the wire: allow clock rounding of a few ms above the 2 s timeout.
    assert all(d is not None and 0 < d <= 2.1 for d in servicer.deadlines)
