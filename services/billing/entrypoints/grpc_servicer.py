"""BillingService over gRPC: thin conversion between protos and the service layer.

Use cases are blocking (database, provider, ledger) and run on the database's
thread pool. The books' RPCs (GetRevenueReport, GetStatement, Reconcile) are
delegated to `books` when one is given (the books half's BooksServicer);
without it they answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

import grpc
from adsmon.billing.v1 import billing_pb2 as pb
from adsmon.billing.v1 import billing_pb2_grpc
from adsmon.type.v1 import money_pb2

from services.billing.adapters.events import FROM_PLAN, chargeback_pb, membership_pb, purchase_pb
from services.billing.domain import catalog, commands
from services.billing.service_layer import chargebacks, memberships, purchases
from services.billing.service_layer.context import Context
from services.kit.errors import InvalidArgument, Unimplemented, require

T = TypeVar("T")
RunBlocking = Callable[..., Awaitable[Any]]


class Books(Protocol):
    """What the books half serves (its BooksServicer)."""

    async def GetRevenueReport(self, request: pb.GetRevenueReportRequest, context: Any
                               ) -> pb.GetRevenueReportResponse: ...

    async def GetStatement(self, request: pb.GetStatementRequest, context: Any
                           ) -> pb.GetStatementResponse: ...

    async def Reconcile(self, request: pb.ReconcileRequest, context: Any) -> pb.ReconcileResponse: ...


def _page_token(created_at: datetime, purchase_id: str, account_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), purchase_id, account_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _after(token: str, account_id: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        at, purchase_id, account = json.loads(base64.urlsafe_b64decode(token.encode()))
        if account != account_id:
            raise ValueError("token of another account")
        return datetime.fromisoformat(at), str(purchase_id)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token was not returned by ListPurchases for this account",
                              field="page_token") from None


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, ctx: Context | None = None, run: RunBlocking | None = None, books: Books | None = None) -> None:
        self.ctx = ctx
        self._run = run
        self.books = books

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self.ctx is not None and self._run is not None, "the servicer was built without its use cases"
        return await self._run(fn, self.ctx, *args)

    async def ListBundles(self, request: pb.ListBundlesRequest, context: grpc.aio.ServicerContext
                          ) -> pb.ListBundlesResponse:
        require(request.account_type in pb.AccountType.values(), "account_type", "unknown value")
        require(0 <= request.page_size <= 1000, "page_size", "must be between 0 and 1000")
        require(not request.page_token, "page_token", "the catalog fits in one page; no token is valid")
        agency = request.account_type == pb.ACCOUNT_TYPE_AGENCY
        items = catalog.bundles(agency=agency)
        return pb.ListBundlesResponse(
            bundles=[pb.Bundle(
                bundle_id=b.bundle_id, connects=b.connects, agency_only=b.agency_only,
                price=money_pb2.Money(amount_minor=b.price_minor, currency_code=catalog.CURRENCY))
                for b in items],
            unit_price=money_pb2.Money(amount_minor=catalog.UNIT_PRICE_MINOR, currency_code=catalog.CURRENCY),
        )

    async def PurchaseConnects(self, request: pb.PurchaseConnectsRequest, context: grpc.aio.ServicerContext
                               ) -> pb.PurchaseConnectsResponse:
        require(request.account_type in pb.AccountType.values(), "account_type", "unknown value")
        item = request.WhichOneof("item")
        cmd = commands.PurchaseConnects(
            request.request_id, request.account_id, request.payment_method,
            bundle_id=request.bundle_id if item == "bundle_id" else None,
            quantity=request.quantity if item == "quantity" else None,
            agency=request.account_type == pb.ACCOUNT_TYPE_AGENCY, currency=request.currency_code)
        purchase = await self._call(purchases.purchase_connects, cmd)
        return pb.PurchaseConnectsResponse(purchase=purchase_pb(purchase))

    async def GetPurchase(self, request: pb.GetPurchaseRequest, context: grpc.aio.ServicerContext
                          ) -> pb.GetPurchaseResponse:
        purchase = await self._call(purchases.get_purchase, request.purchase_id)
        return pb.GetPurchaseResponse(purchase=purchase_pb(purchase))

    async def ListPurchases(self, request: pb.ListPurchasesRequest, context: grpc.aio.ServicerContext
                            ) -> pb.ListPurchasesResponse:
        require(request.page_size >= 0, "page_size", "must not be negative")
        after = _after(request.page_token, request.account_id)
        page = await self._call(purchases.list_purchases, request.account_id, request.page_size, after)
        size = min(request.page_size or purchases.DEFAULT_PAGE_SIZE, purchases.MAX_PAGE_SIZE)
        token = _page_token(page[size - 1].created_at, page[size - 1].purchase_id, request.account_id) \
            if len(page) > size else ""
        return pb.ListPurchasesResponse(purchases=[purchase_pb(p) for p in page[:size]], next_page_token=token)

    async def StartMembership(self, request: pb.StartMembershipRequest, context: grpc.aio.ServicerContext
                              ) -> pb.StartMembershipResponse:
        plan = FROM_PLAN.get(request.plan)
        if plan is None:
            raise InvalidArgument("INVALID_FIELD", "plan must be PLAN_BASIC or PLAN_FREELANCER_PLUS", field="plan")
        cmd = commands.StartMembership(request.request_id, request.account_id, plan, request.payment_method)
        m, grant = await self._call(memberships.start_membership, cmd)
        return pb.StartMembershipResponse(membership=membership_pb(m, request.account_id),
                                          granted_connects=grant.connects)

    async def CancelMembership(self, request: pb.CancelMembershipRequest, context: grpc.aio.ServicerContext
                               ) -> pb.CancelMembershipResponse:
        cmd = commands.CancelMembership(request.request_id, request.account_id)
        m = await self._call(memberships.cancel_membership, cmd)
        return pb.CancelMembershipResponse(membership=membership_pb(m, request.account_id))

    async def GetMembership(self, request: pb.GetMembershipRequest, context: grpc.aio.ServicerContext
                            ) -> pb.GetMembershipResponse:
        m = await self._call(memberships.get_membership, request.account_id)
        return pb.GetMembershipResponse(membership=membership_pb(m, request.account_id))

    async def RecordChargeback(self, request: pb.RecordChargebackRequest, context: grpc.aio.ServicerContext
                               ) -> pb.RecordChargebackResponse:
        cmd = commands.RecordChargeback(request.request_id, request.purchase_id, request.provider_reference,
                                        request.reason)
        cb = await self._call(chargebacks.record_chargeback, cmd)
        return pb.RecordChargebackResponse(chargeback=chargeback_pb(cb))

    async def GetRevenueReport(self, request: pb.GetRevenueReportRequest, context: grpc.aio.ServicerContext
                               ) -> pb.GetRevenueReportResponse:
        if self.books is None:
            raise Unimplemented("UNIMPLEMENTED", "GetRevenueReport is not implemented", method="GetRevenueReport")
        return await self.books.GetRevenueReport(request, context)

    async def GetStatement(self, request: pb.GetStatementRequest, context: grpc.aio.ServicerContext
                           ) -> pb.GetStatementResponse:
        if self.books is None:
            raise Unimplemented("UNIMPLEMENTED", "GetStatement is not implemented", method="GetStatement")
        return await self.books.GetStatement(request, context)

    async def Reconcile(self, request: pb.ReconcileRequest, context: grpc.aio.ServicerContext) -> pb.ReconcileResponse:
        if self.books is None:
            raise Unimplemented("UNIMPLEMENTED", "Reconcile is not implemented", method="Reconcile")
        return await self.books.Reconcile(request, context)
