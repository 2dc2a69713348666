"""The connects ledger as other services see it: a port, its gRPC adapter, its errors.

ads and billing move Connects only through `ConnectsClient`. Every mutation
carries a request_id the caller derives from its own ids (`ads:bid:<id>:hold`,
`billing:purchase:<id>:credit`), so a retry, a restart or a replayed event
gets the ledger's first answer instead of moving Connects twice.

Failures come back as the kit's DomainErrors with connects' reason, so a
caller's interceptor maps them like its own (INSUFFICIENT_CONNECTS stays
FAILED_PRECONDITION INSUFFICIENT_CONNECTS); a ledger that cannot be reached
after the retries is `Unavailable("LEDGER_UNAVAILABLE")`, which callers
treat as "unknown, retry with the same request_id".

The gRPC adapter is blocking: use cases run on worker threads (the DB pool
or a kit Worker). It retries UNAVAILABLE (and DEADLINE_EXCEEDED) with backoff
and jitter, and only for requests that carry a request_id.
"""

from __future__ import annotations

import abc
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.kit import errors
from services.kit.clients import sync_channel
from services.kit.tls import TlsFiles

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_BY_CODE: dict[grpc.StatusCode, type[errors.DomainError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.ABORTED: errors.Aborted,
}


@dataclass(frozen=True)
class Move:
    """What one ledger mutation did."""

    transaction_id: str
    amount: int
    hold_id: str = ""
    available_after: int = 0
    held_after: int = 0


@dataclass(frozen=True)
class ReversedCredit:
    """What ReverseCredit did: `removed` Connects taken back (in `transaction_id`, empty when none were left),
    `already_spent` of the credit that stayed spent (or held, or expired)."""

    transaction_id: str
    removed: int
    already_spent: int


@dataclass(frozen=True)
class Balance:
    account_id: str
    available: int
    held: int


class AbstractConnectsClient(abc.ABC):
    """The ledger's commands and the reads other services need. Sources and reasons are enum names
    without prefix ("PURCHASE", "BOOST"). Refusals raise kit DomainErrors carrying connects' reason."""

    @abc.abstractmethod
    def credit(self, request_id: str, account_id: str, amount: int, source: str, reference: str) -> Move: ...

    @abc.abstractmethod
    def spend(self, request_id: str, account_id: str, amount: int, reason: str, reference: str) -> Move: ...

    @abc.abstractmethod
    def hold(self, request_id: str, account_id: str, amount: int, reason: str, reference: str,
             ttl: timedelta) -> Move: ...

    @abc.abstractmethod
    def increase_hold(self, request_id: str, hold_id: str, new_amount: int) -> Move: ...

    @abc.abstractmethod
    def capture(self, request_id: str, hold_id: str, amount: int) -> Move: ...

    @abc.abstractmethod
    def release(self, request_id: str, hold_id: str) -> Move: ...

    @abc.abstractmethod
    def reverse_credit(self, request_id: str, credit_transaction_id: str) -> ReversedCredit:
        """Take back the unspent Connects of a PURCHASE credit (billing only; a chargeback)."""

    @abc.abstractmethod
    def balance(self, account_id: str) -> Balance: ...

    @abc.abstractmethod
    def ledger_totals(self, start: datetime, end: datetime) -> pb.GetLedgerTotalsResponse: ...


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def _move(tx: pb.LedgerTransaction, hold_id: str = "") -> Move:
    return Move(tx.transaction_id, tx.amount, hold_id or tx.hold_id, tx.available_after, tx.held_after)


def domain_error(exc: grpc.RpcError) -> errors.DomainError:
    """connects' status as a kit DomainError with its reason and metadata."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    reason, metadata = "CONNECTS_ERROR", {}
    status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
    cls = _BY_CODE.get(code)
    if cls is None:
        return errors.Unavailable("LEDGER_UNAVAILABLE", f"the Connects ledger answered {code.name}; retry",
                                  upstream_code=code.name)
    details = exc.details() if hasattr(exc, "details") else ""
    return cls(reason, f"connects: {details}", **metadata)


class GrpcConnectsClient(AbstractConnectsClient):
    """ConnectsService over a blocking channel, authenticated as `caller` (by `tls`' client certificate
    under mutual TLS, else by a bearer token signed with `secret`)."""

    def __init__(self, target: str, *, secret: bytes | None, caller: str, tls: TlsFiles | None = None,
                 timeout: float = 5.0, attempts: int = 4,
                 backoff_initial: float = 0.05, backoff_max: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._channel = sync_channel(target, secret=secret, caller=caller, tls=tls, default_timeout=timeout)
        self._stub = connects_pb2_grpc.ConnectsServiceStub(self._channel)
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = (backoff_initial, backoff_max)
        self._sleep = sleep

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any, *, retry: bool) -> Any:
        rpc = getattr(self._stub, method)
        for attempt in range(self._attempts if retry else 1):
            try:
                return rpc(request, timeout=self._timeout)
            except grpc.RpcError as exc:
                if exc.code() not in _RETRYABLE or attempt + 1 >= (self._attempts if retry else 1):
                    raise domain_error(exc) from None
                cap = min(self._backoff[1], self._backoff[0] * 2 ** attempt)
                self._sleep(random.uniform(0, cap))  # full jitter
        raise AssertionError("unreachable")

    def credit(self, request_id: str, account_id: str, amount: int, source: str, reference: str) -> Move:
        r = self._call("Credit", pb.CreditRequest(request_id=request_id, account_id=account_id, amount=amount,
                                                  source=f"LOT_SOURCE_{source}",
                                                  reference=reference), retry=True)
        return _move(r.transaction)

    def spend(self, request_id: str, account_id: str, amount: int, reason: str, reference: str) -> Move:
        r = self._call("Spend", pb.SpendRequest(request_id=request_id, account_id=account_id, amount=amount,
                                                reason=f"SPEND_REASON_{reason}",
                                                reference=reference), retry=True)
        return _move(r.transaction)

    def hold(self, request_id: str, account_id: str, amount: int, reason: str, reference: str,
             ttl: timedelta) -> Move:
        r = self._call("Hold", pb.HoldRequest(
            request_id=request_id, account_id=account_id, amount=amount,
            reason=f"SPEND_REASON_{reason}", reference=reference,
            ttl=duration_pb2.Duration(seconds=int(ttl.total_seconds()))), retry=True)
        return _move(r.transaction, r.hold_id)

    def increase_hold(self, request_id: str, hold_id: str, new_amount: int) -> Move:
        r = self._call("IncreaseHold", pb.IncreaseHoldRequest(request_id=request_id, hold_id=hold_id,
                                                              new_amount=new_amount), retry=True)
        if r.HasField("transaction"):
            return _move(r.transaction, r.hold_id)
        return Move("", 0, r.hold_id)

    def capture(self, request_id: str, hold_id: str, amount: int) -> Move:
        r = self._call("CaptureHold", pb.CaptureHoldRequest(request_id=request_id, hold_id=hold_id, amount=amount),
                       retry=True)
        return _move(r.transaction)

    def release(self, request_id: str, hold_id: str) -> Move:
        r = self._call("ReleaseHold", pb.ReleaseHoldRequest(request_id=request_id, hold_id=hold_id), retry=True)
        return _move(r.transaction)

    def reverse_credit(self, request_id: str, credit_transaction_id: str) -> ReversedCredit:
        r = self._call("ReverseCredit", pb.ReverseCreditRequest(request_id=request_id,
                                                                credit_transaction_id=credit_transaction_id),
                       retry=True)
        return ReversedCredit(r.transaction.transaction_id if r.HasField("transaction") else "", r.removed,
                              r.already_spent)

    def balance(self, account_id: str) -> Balance:
        r = self._call("GetBalance", pb.GetBalanceRequest(account_id=account_id), retry=False)
        return Balance(r.account_id, r.available, r.held)

    def ledger_totals(self, start: datetime, end: datetime) -> pb.GetLedgerTotalsResponse:
        return self._call("GetLedgerTotals", pb.GetLedgerTotalsRequest(start_time=_ts(start), end_time=_ts(end)),
                          retry=False)
