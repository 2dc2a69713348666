"""A click charges through the real connects service (its own process and database) exactly once."""

from __future__ import annotations

import grpc
import pytest
from adsmon.ads.v1 import ads_pb2 as pb
from adsmon.connects.v1 import connects_pb2 as cpb
from adsmon.connects.v1 import connects_pb2_grpc

from services.connects.client import GrpcConnectsClient
from services.kit.auth import mint_token
from tests.conftest import unique
from tests.e2e.conftest import launch, secret_file  # noqa: F401 - fixtures: the real connects process
from tests.integration.ads.promoted_support import promoted_engine_fixture, promoted_replica, settings

pytestmark = pytest.mark.integration


engine = promoted_engine_fixture()


def ledger(target: str, secret: bytes, caller: str) -> tuple[connects_pb2_grpc.ConnectsServiceStub, list]:
    stub = connects_pb2_grpc.ConnectsServiceStub(grpc.insecure_channel(target))
    return stub, [("authorization", f"Bearer {mint_token(secret, caller)}")]


async def test_a_click_spends_the_price_from_the_real_ledger_once(engine, auth_secret, launch) -> None:  # noqa: F811
    connects = launch("connects")
    billing, billing_md = ledger(connects.target, auth_secret, "billing")
    rich, poor, category = unique("fl"), unique("fl"), unique("cat")
    billing.Credit(cpb.CreditRequest(request_id=unique("credit"), account_id=rich, amount=50,
                                     source=cpb.LOT_SOURCE_PURCHASE), metadata=billing_md, timeout=10)
    billing.Credit(cpb.CreditRequest(request_id=unique("credit"), account_id=poor, amount=2,
                                     source=cpb.LOT_SOURCE_PURCHASE), metadata=billing_md, timeout=10)
    client = GrpcConnectsClient(connects.target, secret=auth_secret, caller="ads")
    try:
        async with promoted_replica(engine, auth_secret, client, settings=settings(reserve_connects=3)) as r:
            for owner, bid in ((rich, 8), (poor, 6)):
                await r.stub.CreateCampaign(pb.CreateCampaignRequest(
                    request_id=unique("req"), freelancer_id=owner, category=category, max_cpc_connects=bid,
                    daily_budget_connects=100), metadata=r.metadata)
            top, second = (await r.stub.GetPlacements(pb.GetPlacementsRequest(
                category=category, viewer_id="v", slots=2), metadata=r.metadata)).placements
            assert (top.freelancer_id, top.price_connects, second.freelancer_id, second.price_connects) == \
                (rich, 6, poor, 3)
            request_id = unique("click")
            answers = [await r.stub.RecordClick(pb.RecordClickRequest(request_id=rid, placement_token=token),
                                                metadata=r.metadata)
                       for rid, token in ((request_id, top.placement_token), (request_id, top.placement_token),
                                          (unique("click"), top.placement_token),
                                          (unique("click"), second.placement_token))]
            assert [(a.outcome, a.charged_connects) for a in answers] == [
                (pb.CLICK_OUTCOME_CHARGED, 6), (pb.CLICK_OUTCOME_CHARGED, 6),  # a retry: the first answer
                (pb.CLICK_OUTCOME_DUPLICATE, 0), (pb.CLICK_OUTCOME_INSUFFICIENT_CONNECTS, 0)]
            assert not [p for p in (await r.stub.GetPlacements(pb.GetPlacementsRequest(
                category=category, viewer_id="w", slots=2), metadata=r.metadata)).placements
                if p.freelancer_id == poor], "a campaign whose owner cannot pay stops for the day"
    finally:
        client.close()
    reader, reader_md = ledger(connects.target, auth_secret, "operator")
    assert reader.GetBalance(cpb.GetBalanceRequest(account_id=rich), metadata=reader_md, timeout=10).available == 44
    assert reader.GetBalance(cpb.GetBalanceRequest(account_id=poor), metadata=reader_md, timeout=10).available == 2
    spends = [t for t in reader.ListTransactions(cpb.ListTransactionsRequest(account_id=rich), metadata=reader_md,
                                                 timeout=10).transactions if t.kind == cpb.TRANSACTION_KIND_SPEND]
    assert [(t.amount, t.spend_reason) for t in spends] == [(6, cpb.SPEND_REASON_PROMOTED_PROFILE)]
