"""BillingService over gRPC: thin conversion between protos and the service layer.

Purchases, memberships and revenue are not built yet: those RPCs answer
UNIMPLEMENTED (the generated base class) until their issue lands.
"""

from __future__ import annotations

import grpc
from adsmon.billing.v1 import billing_pb2, billing_pb2_grpc
from adsmon.type.v1 import money_pb2

from services.billing.domain import catalog
from services.kit.errors import require


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    async def ListBundles(self, request: billing_pb2.ListBundlesRequest, context: grpc.aio.ServicerContext,
                          ) -> billing_pb2.ListBundlesResponse:
        require(request.account_type in billing_pb2.AccountType.values(), "account_type", "unknown value")
        require(0 <= request.page_size <= 1000, "page_size", "must be between 0 and 1000")
        require(not request.page_token, "page_token", "the catalog fits in one page; no token is valid")
        agency = request.account_type == billing_pb2.ACCOUNT_TYPE_AGENCY
        items = catalog.bundles(agency=agency)
        return billing_pb2.ListBundlesResponse(
            bundles=[billing_pb2.Bundle(
                bundle_id=b.bundle_id, connects=b.connects, agency_only=b.agency_only,
                price=money_pb2.Money(amount_minor=b.price_minor, currency_code=catalog.CURRENCY))
                for b in items],
            unit_price=money_pb2.Money(amount_minor=catalog.UNIT_PRICE_MINOR, currency_code=catalog.CURRENCY),
        )
