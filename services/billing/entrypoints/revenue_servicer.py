"""The books' RPCs (GetRevenueReport, GetStatement, Reconcile): thin conversions around the use cases.

`BooksServicer` has the generated signatures; billing's servicer delegates
these three methods to it. Blocking work runs on a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from adsmon.billing.v1 import billing_pb2
from google.protobuf import timestamp_pb2
from sqlalchemy.engine import Engine

from services.billing.adapters.revenue_events import PRODUCT_PB, money
from services.billing.service_layer import reports
from services.billing.service_layer.ports import PurchaseLookup
from services.billing.service_layer.reconcile import Reconciler
from services.kit.errors import require
from services.kit.prototime import optional_datetime

T = TypeVar("T")
MAX_REQUEST_ID = 128


def _time(msg: Any, name: str) -> datetime | None:
    return optional_datetime(msg, name)


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def report_pb(r: reports.RevenueReport) -> billing_pb2.RevenueReport:
    return billing_pb2.RevenueReport(
        start_time=_ts(r.start), end_time=_ts(r.end), deferred_opening=money(r.deferred_opening),
        cash_received=money(r.cash_received),
        recognised=[billing_pb2.ProductRevenue(product=PRODUCT_PB[p], connects=c, amount=money(v))
                    for p, (c, v) in sorted(r.recognised.items(), key=lambda kv: PRODUCT_PB[kv[0]])],
        recognised_total=money(r.recognised_total), breakage_connects=r.breakage_connects,
        breakage=money(r.breakage), chargeback_reversed=money(r.chargeback_reversed),
        chargeback_loss=money(r.chargeback_loss), deferred_closing=money(r.deferred_closing),
        membership_fees=money(r.membership_fees))


def statement_pb(s: reports.Statement) -> billing_pb2.Statement:
    lines = []
    for x in s.lines:
        line = billing_pb2.StatementLine(
            occurred_at=_ts(x.occurred_at), kind=f"STATEMENT_LINE_KIND_{x.kind}",
            connects_delta=x.connects_delta, reference=x.reference,
            product=PRODUCT_PB[x.product] if x.product else billing_pb2.PRODUCT_UNSPECIFIED)
        if x.cents is not None:
            line.amount.CopyFrom(money(x.cents))
        lines.append(line)
    return billing_pb2.Statement(
        account_id=s.account_id, start_time=_ts(s.start), end_time=_ts(s.end), opening_connects=s.opening_connects,
        closing_connects=s.closing_connects, lines=lines, purchases_total=money(s.purchases_total),
        membership_fees_total=money(s.membership_fees_total))


class BooksServicer:
    """GetRevenueReport, GetStatement and Reconcile of BillingService."""

    def __init__(self, engine: Engine, purchases: PurchaseLookup, reconciler: Reconciler) -> None:
        self.engine = engine
        self.purchases = purchases
        self.reconciler = reconciler

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def GetRevenueReport(self, request: billing_pb2.GetRevenueReportRequest,
                               context: Any) -> billing_pb2.GetRevenueReportResponse:
        start, end = reports.check_period(_time(request, "start_time"), _time(request, "end_time"))
        report = await self._run(reports.revenue_report, self.engine, self.purchases, start, end)
        return billing_pb2.GetRevenueReportResponse(report=report_pb(report))

    async def GetStatement(self, request: billing_pb2.GetStatementRequest,
                           context: Any) -> billing_pb2.GetStatementResponse:
        require(bool(request.account_id), "account_id", "is required")
        require(len(request.account_id) <= 128, "account_id", "at most 128 characters")
        start, end = reports.check_period(_time(request, "start_time"), _time(request, "end_time"))
        stmt = await self._run(reports.statement, self.engine, self.purchases, request.account_id,
                                   start, end)
        return billing_pb2.GetStatementResponse(statement=statement_pb(stmt))

    async def Reconcile(self, request: billing_pb2.ReconcileRequest, context: Any) -> billing_pb2.ReconcileResponse:
        require(len(request.request_id) <= MAX_REQUEST_ID, "request_id", f"at most {MAX_REQUEST_ID} characters")
        return await self._run(self.reconciler.run, request.request_id or None)
