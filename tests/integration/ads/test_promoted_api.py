"""Promoted profiles through gRPC on PostgreSQL: campaigns, placements, clicks, errors, events in the outbox."""

from __future__ import annotations

import grpc
import pytest
import sqlalchemy as sa
from adsmon.ads.v1 import ads_pb2 as pb
from adsmon.ads.v1 import events_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.kit.kafka import decode_event
from tests.conftest import unique
from tests.integration.ads.promoted_support import promoted_engine_fixture, promoted_replica
from tests.unit.ads.promoted_fakes import FakeConnects

pytestmark = pytest.mark.integration


engine = promoted_engine_fixture()


def reason(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    status = rpc_status.from_call(exc)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return exc.code(), info.reason, dict(info.metadata)


async def test_a_campaign_is_created_read_listed_paused_resumed_and_placed(engine, auth_secret) -> None:
    connects = FakeConnects()
    async with promoted_replica(engine, auth_secret, connects) as r:
        fl, cat = unique("fl"), unique("cat")
        created = (await r.stub.CreateCampaign(pb.CreateCampaignRequest(
            request_id=unique("req"), freelancer_id=fl, category=cat, max_cpc_connects=5, daily_budget_connects=50),
            metadata=r.metadata)).campaign
        assert created.state == pb.CAMPAIGN_STATE_ACTIVE and created.quality_score == 1.0
        assert created.frequency_cap == 3  # the default; CreateCampaignRequest.frequency_cap sets its own
        got = (await r.stub.GetCampaign(pb.GetCampaignRequest(campaign_id=created.campaign_id),
                                        metadata=r.metadata)).campaign
        assert got == created
        listed = await r.stub.ListCampaigns(pb.ListCampaignsRequest(freelancer_id=fl), metadata=r.metadata)
        assert [c.campaign_id for c in listed.campaigns] == [created.campaign_id] and not listed.next_page_token
        placements = (await r.stub.GetPlacements(pb.GetPlacementsRequest(category=cat, viewer_id="v", slots=3),
                                                 metadata=r.metadata)).placements
        assert [(p.campaign_id, p.position, p.price_connects) for p in placements] == [(created.campaign_id, 1, 1)]
        paused = (await r.stub.PauseCampaign(pb.PauseCampaignRequest(request_id=unique("req"),
                                                                    campaign_id=created.campaign_id),
                                             metadata=r.metadata)).campaign
        assert paused.state == pb.CAMPAIGN_STATE_PAUSED
        assert not (await r.stub.GetPlacements(pb.GetPlacementsRequest(category=cat, viewer_id="v2", slots=3),
                                               metadata=r.metadata)).placements
        resumed = (await r.stub.ResumeCampaign(pb.ResumeCampaignRequest(request_id=unique("req"),
                                                                       campaign_id=created.campaign_id),
                                               metadata=r.metadata)).campaign
        assert resumed.state == pb.CAMPAIGN_STATE_ACTIVE
        assert len((await r.stub.GetPlacements(pb.GetPlacementsRequest(category=cat, viewer_id="v2", slots=3),
                                               metadata=r.metadata)).placements) == 1
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT topic, key, payload FROM outbox ORDER BY id")).all()
    assert [(topic, key) for topic, key, _ in rows] == [("ads.events.v1", created.campaign_id)] * 3
    assert [decode_event(bytes(p)).type for _, _, p in rows] == [
        "adsmon.ads.v1.CampaignCreated", "adsmon.ads.v1.CampaignPaused", "adsmon.ads.v1.CampaignResumed"]


async def test_a_click_charges_once_and_is_published(engine, auth_secret) -> None:
    connects = FakeConnects()
    async with promoted_replica(engine, auth_secret, connects) as r:
        fl, cat = unique("fl"), unique("cat")
        connects.balances[fl] = 100
        for bid, owner in ((9, fl), (4, unique("fl"))):
            await r.stub.CreateCampaign(pb.CreateCampaignRequest(
                request_id=unique("req"), freelancer_id=owner, category=cat, max_cpc_connects=bid,
                daily_budget_connects=50), metadata=r.metadata)
        top = (await r.stub.GetPlacements(pb.GetPlacementsRequest(category=cat, viewer_id="v", slots=1),
                                          metadata=r.metadata)).placements[0]
        assert top.price_connects == 4
        first = await r.stub.RecordClick(pb.RecordClickRequest(request_id=unique("c"),
                                                               placement_token=top.placement_token),
                                         metadata=r.metadata)
        again = await r.stub.RecordClick(pb.RecordClickRequest(request_id=unique("c"),
                                                               placement_token=top.placement_token),
                                         metadata=r.metadata)
        assert (first.outcome, first.charged_connects) == (pb.CLICK_OUTCOME_CHARGED, 4)
        assert (again.outcome, again.charged_connects) == (pb.CLICK_OUTCOME_DUPLICATE, 0)
        assert connects.spent_by(fl) == 4
        got = (await r.stub.GetCampaign(pb.GetCampaignRequest(campaign_id=top.campaign_id),
                                        metadata=r.metadata)).campaign
        assert got.spent_today_connects == 4
    with engine.connect() as conn:
        payloads = [bytes(p) for (p,) in conn.execute(sa.text(
            "SELECT payload FROM outbox WHERE key = :k ORDER BY id"), {"k": top.campaign_id})]
    clicked = [decode_event(p) for p in payloads][-2:]
    assert [e.type for e in clicked] == ["adsmon.ads.v1.PlacementClicked"] * 2
    outcomes = []
    for e in clicked:
        msg = events_pb2.PlacementClicked()
        e.payload.Unpack(msg)
        outcomes.append((msg.outcome, msg.charged_connects, bool(msg.transaction_id)))
    assert outcomes == [(pb.CLICK_OUTCOME_CHARGED, 4, True), (pb.CLICK_OUTCOME_DUPLICATE, 0, False)]


@pytest.mark.parametrize(("request_", "code", "why", "field"), [
    (pb.CreateCampaignRequest(request_id="r", freelancer_id="f", category="c", max_cpc_connects=0,
                              daily_budget_connects=5), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD",
     "max_cpc_connects"),
    (pb.CreateCampaignRequest(request_id="r", freelancer_id="", category="c", max_cpc_connects=1,
                              daily_budget_connects=5), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD",
     "freelancer_id"),
    (pb.GetCampaignRequest(campaign_id="cmp-missing"), grpc.StatusCode.NOT_FOUND, "CAMPAIGN_NOT_FOUND", None),
    (pb.GetPlacementsRequest(category="c", viewer_id="v", slots=11), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_FIELD", "slots"),
    (pb.RecordClickRequest(request_id="r", placement_token="pt1~forged~mac"), grpc.StatusCode.INVALID_ARGUMENT,
     "PLACEMENT_TOKEN_INVALID", "placement_token"),
    (pb.ListCampaignsRequest(freelancer_id="f", page_token="!!"), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_PAGE_TOKEN", "page_token"),
])
async def test_bad_requests_get_clear_errors(engine, auth_secret, request_, code, why, field) -> None:
    async with promoted_replica(engine, auth_secret, FakeConnects()) as r:
        method = {pb.CreateCampaignRequest: r.stub.CreateCampaign, pb.GetCampaignRequest: r.stub.GetCampaign,
                  pb.GetPlacementsRequest: r.stub.GetPlacements, pb.RecordClickRequest: r.stub.RecordClick,
                  pb.ListCampaignsRequest: r.stub.ListCampaigns}[type(request_)]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(request_, metadata=r.metadata)
        got_code, got_reason, metadata = reason(err.value)
        assert (got_code, got_reason) == (code, why)
        if field:
            assert metadata["field"] == field
