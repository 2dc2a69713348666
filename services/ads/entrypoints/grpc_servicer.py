"""AdsService over gRPC: protos in, use cases on the DB thread pool, protos out.

Auctions and badges are served here; the promoted-profile RPCs (campaigns, GetPlacements, RecordClick)
are delegated to `PromotedServicer` (services/ads/entrypoints/promoted_servicer.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
from adsmon.ads.v1 import ads_pb2 as pb
from adsmon.ads.v1 import ads_pb2_grpc

from services.ads.adapters.events import duration, timestamp
from services.ads.domain.auction import CloseReason, Interaction
from services.ads.entrypoints.promoted_servicer import PromotedServicer
from services.ads.service_layer import auctions, badges, views
from services.ads.service_layer.auctions import UowFactory
from services.ads.service_layer.metrics import Metrics
from services.ads.service_layer.unit_of_work import SearchCounter
from services.connects.client import AbstractConnectsClient
from services.kit.auth import Policy
from services.kit.errors import InvalidArgument

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AdsService"].full_name
# The marketplace acts for its users; closing an auction by hand (AUCTION_CLOSE_REASON_MANUAL) is an operator's.
POLICY = Policy.build(SERVICE_NAME, default={"marketplace", "operator"}, methods={"CloseAuction": {"operator"}})
T = TypeVar("T")


def bid_pb(bid: views.BidView) -> pb.Bid:
    msg = pb.Bid(job_id=bid.job_id, proposal_id=bid.proposal_id, freelancer_id=bid.freelancer_id,
                 bid_connects=bid.bid_connects, rank=bid.rank, boosted=bid.boosted,
                 interacted_while_boosted=bid.interacted_while_boosted,
                 state=f"BID_STATE_{bid.state}" if bid.state != "PENDING" else None,
                 hold_id=bid.hold_id, placed_at=timestamp(bid.placed_at))
    if bid.updated_at:
        msg.updated_at.CopyFrom(timestamp(bid.updated_at))
    return msg


def auction_pb(a: views.AuctionView) -> pb.Auction:
    msg = pb.Auction(job_id=a.job_id, status=f"AUCTION_STATUS_{a.status}",
                     close_reason=f"AUCTION_CLOSE_REASON_{a.close_reason}" if a.close_reason else None,
                     placebo=a.placebo, boosted_slots=a.boosted_slots, bids=[bid_pb(b) for b in a.bids],
                     opened_at=timestamp(a.opened_at), closes_at=timestamp(a.closes_at))
    if a.closed_at:
        msg.closed_at.CopyFrom(timestamp(a.closed_at))
    return msg


def badge_pb(b: views.BadgeView) -> pb.Badge:
    msg = pb.Badge(freelancer_id=b.freelancer_id, state=f"BADGE_STATE_{b.state}",
                   stop_reason=f"BADGE_STOP_REASON_{b.stop_reason}" if b.stop_reason else None,
                   weekly_max_connects=b.weekly_max_connects,
                   current_weekly_price_connects=b.current_weekly_price_connects,
                   charge_interval=duration(b.charge_interval),
                   charged_this_week_connects=b.charged_this_week_connects, category=b.category)
    for name in ("next_charge_at", "started_at", "stopped_at"):
        value = getattr(b, name)
        if value:
            getattr(msg, name).CopyFrom(timestamp(value))
    return msg


def _interaction(value: int) -> Interaction:
    name = pb.InteractionKind.Name(value).removeprefix("INTERACTION_KIND_") if value in pb.InteractionKind.values() \
        else ""
    if name not in Interaction.__members__:
        raise InvalidArgument("INVALID_FIELD", "kind: must be a known interaction kind", field="kind")
    return Interaction(name)


def _close_reason(value: int) -> CloseReason | None:
    if value == 0:
        return None
    name = pb.AuctionCloseReason.Name(value).removeprefix("AUCTION_CLOSE_REASON_") \
        if value in pb.AuctionCloseReason.values() else ""
    if name not in CloseReason.__members__:
        raise InvalidArgument("INVALID_FIELD", "reason: must be a known close reason", field="reason")
    return CloseReason(name)


class AdsServicer(ads_pb2_grpc.AdsServiceServicer):
    """Auctions and badges; blocking use cases run on `run` (the database thread pool). The promoted-profile
    RPCs are `promoted`'s."""

    def __init__(self, uow_factory: UowFactory, connects: AbstractConnectsClient, clock: Callable[[], datetime],
                 run: Callable[..., Awaitable[Any]], *, auction_settings: auctions.AuctionSettings,
                 badge_settings: badges.BadgeSettings, searches: SearchCounter, metrics: Metrics,
                 promoted: PromotedServicer, on_closed: Callable[[], None] | None = None) -> None:
        self.uow_factory, self.connects, self.clock, self._run = uow_factory, connects, clock, run
        self.promoted = promoted
        self.auction_settings, self.badge_settings = auction_settings, badge_settings
        self.searches, self.metrics, self.on_closed = searches, metrics, on_closed

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        result: T = await self._run(fn, *args)
        return result

    async def PlaceBid(self, request: pb.PlaceBidRequest, context: grpc.aio.ServicerContext) -> pb.PlaceBidResponse:
        cmd = auctions.PlaceBid(request.request_id, request.job_id, request.proposal_id, request.freelancer_id,
                                request.bid_connects)
        result = await self.run(auctions.place_bid, self.uow_factory, self.connects, cmd, self.clock(),
                                self.auction_settings, self.metrics)
        return pb.PlaceBidResponse(bid=bid_pb(result.bid), raised=result.raised)

    async def GetAuction(self, request: pb.GetAuctionRequest, context: grpc.aio.ServicerContext
                         ) -> pb.GetAuctionResponse:
        view = await self.run(auctions.get_auction, self.uow_factory, request.job_id)
        return pb.GetAuctionResponse(auction=auction_pb(view))

    async def RecordInteraction(self, request: pb.RecordInteractionRequest, context: grpc.aio.ServicerContext
                                ) -> pb.RecordInteractionResponse:
        cmd = auctions.RecordInteraction(request.request_id, request.job_id, request.proposal_id,
                                         _interaction(request.kind))
        result = await self.run(auctions.record_interaction, self.uow_factory, cmd, self.clock())
        reply = pb.RecordInteractionResponse(counted=result.counted)
        if result.bid:
            reply.bid.CopyFrom(bid_pb(result.bid))
        return reply

    async def CloseAuction(self, request: pb.CloseAuctionRequest, context: grpc.aio.ServicerContext
                           ) -> pb.CloseAuctionResponse:
        view = await self.run(auctions.close_auction, self.uow_factory, request.request_id, request.job_id,
                              _close_reason(request.reason), self.clock(), self.auction_settings, self.metrics)
        if self.on_closed:
            self.on_closed()
        return pb.CloseAuctionResponse(auction=auction_pb(view))

    async def StartBadge(self, request: pb.StartBadgeRequest, context: grpc.aio.ServicerContext
                         ) -> pb.StartBadgeResponse:
        view = await self.run(badges.start_badge, self.uow_factory, self.connects, request.request_id,
                              request.freelancer_id, request.category, request.weekly_max_connects, self.clock(),
                              self.badge_settings, self.searches, self.metrics)
        return pb.StartBadgeResponse(badge=badge_pb(view))

    async def StopBadge(self, request: pb.StopBadgeRequest, context: grpc.aio.ServicerContext
                        ) -> pb.StopBadgeResponse:
        view = await self.run(badges.stop_badge, self.uow_factory, request.request_id, request.freelancer_id,
                              self.clock(), self.badge_settings, self.searches, self.metrics)
        return pb.StopBadgeResponse(badge=badge_pb(view))

    async def GetBadge(self, request: pb.GetBadgeRequest, context: grpc.aio.ServicerContext) -> pb.GetBadgeResponse:
        view = await self.run(badges.get_badge, self.uow_factory, request.freelancer_id, request.category,
                              self.badge_settings, self.searches, self.clock())
        return pb.GetBadgeResponse(badge=badge_pb(view))

    # -- promoted profiles: delegated -------------------------------------------------------------------

    async def CreateCampaign(self, request: pb.CreateCampaignRequest, context: grpc.aio.ServicerContext
                             ) -> pb.CreateCampaignResponse:
        return await self.promoted.CreateCampaign(request, context)

    async def GetCampaign(self, request: pb.GetCampaignRequest, context: grpc.aio.ServicerContext
                          ) -> pb.GetCampaignResponse:
        return await self.promoted.GetCampaign(request, context)

    async def ListCampaigns(self, request: pb.ListCampaignsRequest, context: grpc.aio.ServicerContext
                            ) -> pb.ListCampaignsResponse:
        return await self.promoted.ListCampaigns(request, context)

    async def PauseCampaign(self, request: pb.PauseCampaignRequest, context: grpc.aio.ServicerContext
                            ) -> pb.PauseCampaignResponse:
        return await self.promoted.PauseCampaign(request, context)

    async def ResumeCampaign(self, request: pb.ResumeCampaignRequest, context: grpc.aio.ServicerContext
                             ) -> pb.ResumeCampaignResponse:
        return await self.promoted.ResumeCampaign(request, context)

    async def GetPlacements(self, request: pb.GetPlacementsRequest, context: grpc.aio.ServicerContext
                            ) -> pb.GetPlacementsResponse:
        return await self.promoted.GetPlacements(request, context)

    async def RecordClick(self, request: pb.RecordClickRequest, context: grpc.aio.ServicerContext
                          ) -> pb.RecordClickResponse:
        return await self.promoted.RecordClick(request, context)
