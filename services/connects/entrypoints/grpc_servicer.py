"""ConnectsService over gRPC: protos in, commands to the ledger, protos out. No rules here."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import grpc
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc

from services.connects.adapters.events import (
    FROM_LOT_SOURCE,
    FROM_RETURN_REASON,
    FROM_SPEND_REASON,
    LOT_SOURCE,
    SPEND_REASON,
    lot_pb,
    timestamp,
    transaction_pb,
)
from services.connects.domain import commands as c
from services.connects.service_layer.handlers import RETURN_CALLERS
from services.connects.service_layer.ledger import Ledger
from services.connects.service_layer.totals import LedgerTotals
from services.kit.auth import Policy, current_caller
from services.kit.errors import InvalidArgument
from services.kit.prototime import optional_datetime

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ConnectsService"].full_name

# Who may call what at all; finer rules (PURCHASE, ad products) live in the service layer, which also
# enforces the ReturnConnects callers (for the consumer and for replays).
POLICY = Policy.build(SERVICE_NAME, default={"billing", "ads", "marketplace", "operator"},
                      methods={"Credit": {"billing", "marketplace", "operator"},
                               "ReturnConnects": RETURN_CALLERS, "ReverseCredit": {"billing"},
                               # reconciliation reads the whole journal: billing and support only
                               "GetLedgerTotals": {"billing", "operator"}})


def _enum(mapping: Mapping[int, object], value: int) -> object:
    # Unknown or UNSPECIFIED numbers pass through unmapped; command validation refuses them with the field.
    return mapping.get(value, value)


def _ttl(request: pb.HoldRequest) -> timedelta:
    if not request.HasField("ttl"):
        return c.DEFAULT_HOLD_TTL
    d = request.ttl
    if not -999_999_999 <= d.nanos <= 999_999_999 or (d.seconds and d.nanos and (d.seconds > 0) != (d.nanos > 0)):
        raise InvalidArgument("TTL_OUT_OF_RANGE", "ttl is not a valid duration", field="ttl")
    if abs(d.seconds) > 10**10:
        raise InvalidArgument("TTL_OUT_OF_RANGE", "ttl must be between 1 second and 90 days", field="ttl")
    return timedelta(seconds=d.seconds, microseconds=d.nanos // 1000)


def _time(request: pb.GetLedgerTotalsRequest, field: str) -> datetime | None:
    """The timestamp `field` of the request as an aware datetime; None when unset."""
    return optional_datetime(request, field)


def _totals_pb(t: LedgerTotals) -> pb.GetLedgerTotalsResponse:
    return pb.GetLedgerTotalsResponse(
        start_time=timestamp(t.start), end_time=timestamp(t.end),
        system_balances=[pb.SystemAccountBalance(ledger_account=a, balance=v)
                         for a, v in sorted(t.system_balances.items())],
        issued=[pb.IssuedTotal(source=LOT_SOURCE[s], connects=i.connects, transactions=i.transactions)
                for s, i in sorted(t.issued.items(), key=lambda x: LOT_SOURCE[x[0]])],
        spent=[pb.SpentTotal(reason=SPEND_REASON[r], origin_source=LOT_SOURCE[o], connects=v)
               for (r, o), v in sorted(t.spent.items(), key=lambda x: (SPEND_REASON[x[0][0]], LOT_SOURCE[x[0][1]]))],
        expired=[pb.OriginTotal(origin_source=LOT_SOURCE[o], connects=v)
                 for o, v in sorted(t.expired.items(), key=lambda x: LOT_SOURCE[x[0]])],
        returned=[pb.OriginTotal(origin_source=LOT_SOURCE[o], connects=v)
                  for o, v in sorted(t.returned.items(), key=lambda x: LOT_SOURCE[x[0]])],
        reversed=[pb.OriginTotal(origin_source=LOT_SOURCE[o], connects=v)
                  for o, v in sorted(t.reversed.items(), key=lambda x: LOT_SOURCE[x[0]])],
        held=t.held)


class ConnectsServicer(connects_pb2_grpc.ConnectsServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def GetBalance(self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
                         ) -> pb.GetBalanceResponse:
        b = await self.ledger.balance(request.account_id)
        return pb.GetBalanceResponse(account_id=b.account_id, available=b.available, held=b.held,
                                     lots=[lot_pb(lot) for lot in b.lots],
                                     expiring_within_30_days=b.expiring_within_30_days,
                                     held_expiring_within_30_days=b.held_expiring_within_30_days)

    async def Credit(self, request: pb.CreditRequest, context: grpc.aio.ServicerContext) -> pb.CreditResponse:
        cmd = c.Credit(request.request_id, request.account_id, request.amount,
                       _enum(FROM_LOT_SOURCE, request.source), request.reference)  # type: ignore[arg-type]
        receipt = await self.ledger.mutate(cmd, current_caller())
        return pb.CreditResponse(transaction=transaction_pb(receipt.recorded))

    async def Spend(self, request: pb.SpendRequest, context: grpc.aio.ServicerContext) -> pb.SpendResponse:
        cmd = c.Spend(request.request_id, request.account_id, request.amount,
                      _enum(FROM_SPEND_REASON, request.reason), request.reference)  # type: ignore[arg-type]
        receipt = await self.ledger.mutate(cmd, current_caller())
        return pb.SpendResponse(transaction=transaction_pb(receipt.recorded))

    async def Hold(self, request: pb.HoldRequest, context: grpc.aio.ServicerContext) -> pb.HoldResponse:
        cmd = c.PlaceHold(request.request_id, request.account_id, request.amount,
                          _enum(FROM_SPEND_REASON, request.reason), request.reference,  # type: ignore[arg-type]
                          _ttl(request))
        receipt = await self.ledger.mutate(cmd, current_caller())
        assert receipt.hold_expires_at is not None
        return pb.HoldResponse(hold_id=receipt.hold_id, expires_at=timestamp(receipt.hold_expires_at),
                               transaction=transaction_pb(receipt.recorded))

    async def CaptureHold(self, request: pb.CaptureHoldRequest, context: grpc.aio.ServicerContext
                          ) -> pb.CaptureHoldResponse:
        cmd = c.CaptureHold(request.request_id, request.hold_id, request.amount)
        receipt = await self.ledger.mutate(cmd, current_caller())
        return pb.CaptureHoldResponse(transaction=transaction_pb(receipt.recorded))

    async def IncreaseHold(self, request: pb.IncreaseHoldRequest, context: grpc.aio.ServicerContext
                           ) -> pb.IncreaseHoldResponse:
        cmd = c.IncreaseHold(request.request_id, request.hold_id, request.new_amount)
        receipt = await self.ledger.mutate(cmd, current_caller())
        tx = transaction_pb(receipt.transaction) if receipt.transaction else None
        return pb.IncreaseHoldResponse(hold_id=receipt.hold_id, amount=receipt.hold_amount, transaction=tx)

    async def ReleaseHold(self, request: pb.ReleaseHoldRequest, context: grpc.aio.ServicerContext
                          ) -> pb.ReleaseHoldResponse:
        receipt = await self.ledger.mutate(c.ReleaseHold(request.request_id, request.hold_id), current_caller())
        return pb.ReleaseHoldResponse(transaction=transaction_pb(receipt.recorded))

    async def ReturnConnects(self, request: pb.ReturnConnectsRequest, context: grpc.aio.ServicerContext
                             ) -> pb.ReturnConnectsResponse:
        cmd = c.ReturnConnects(request.request_id, request.spend_transaction_id,
                               _enum(FROM_RETURN_REASON, request.reason))  # type: ignore[arg-type]
        receipt = await self.ledger.mutate(cmd, current_caller())
        return pb.ReturnConnectsResponse(transaction=transaction_pb(receipt.recorded))

    async def ReverseCredit(self, request: pb.ReverseCreditRequest, context: grpc.aio.ServicerContext
                            ) -> pb.ReverseCreditResponse:
        receipt = await self.ledger.mutate(c.ReverseCredit(request.request_id, request.credit_transaction_id),
                                           current_caller())
        tx = receipt.transaction
        reply = pb.ReverseCreditResponse(removed=tx.amount if tx else 0, already_spent=receipt.already_spent)
        if tx is not None:
            reply.transaction.CopyFrom(transaction_pb(tx))
        return reply

    async def ListTransactions(self, request: pb.ListTransactionsRequest, context: grpc.aio.ServicerContext
                               ) -> pb.ListTransactionsResponse:
        page = await self.ledger.transactions(request.account_id, request.page_size, request.page_token)
        return pb.ListTransactionsResponse(transactions=[transaction_pb(t) for t in page.transactions],
                                           next_page_token=page.next_page_token)

    async def GetLedgerTotals(self, request: pb.GetLedgerTotalsRequest, context: grpc.aio.ServicerContext
                              ) -> pb.GetLedgerTotalsResponse:
        totals = await self.ledger.ledger_totals(_time(request, "start_time"), _time(request, "end_time"))
        return _totals_pb(totals)
