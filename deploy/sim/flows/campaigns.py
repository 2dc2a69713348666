"""Freelancers promote their profile in talent search: ads.CreateCampaign (category, max CPC, daily budget)."""

from __future__ import annotations

from adsmon.ads.v1 import ads_pb2 as pb
from adsmon.ads.v1 import ads_pb2_grpc

from deploy.sim.core import CATEGORIES, Sim

MAX_CAMPAIGNS = 200


class Campaigns:
    name, service, weight = "campaigns", "ads", 0.3

    def step(self, sim: Sim) -> None:
        stub = ads_pb2_grpc.AdsServiceStub
        if len(sim.world.campaigns) >= MAX_CAMPAIGNS or (sim.world.campaigns and sim.rng.random() < 0.1):
            campaign = sim.rng.choice(sim.world.campaigns)
            if sim.call("ads", stub, "PauseCampaign",
                        pb.PauseCampaignRequest(request_id=sim.id("pause"), campaign_id=campaign)) is not None:
                sim.world.campaigns.remove(campaign)
            return
        request = pb.CreateCampaignRequest(request_id=sim.id("camp"),
                                           freelancer_id=sim.rng.choice(sim.world.freelancers),
                                           category=sim.rng.choice(CATEGORIES),
                                           max_cpc_connects=sim.rng.choice((1, 2, 3, 5)),
                                           daily_budget_connects=sim.rng.choice((10, 20, 50)))
        reply = sim.call("ads", stub, "CreateCampaign", request)
        if reply is not None:
            sim.world.campaigns.append(reply.campaign.campaign_id)
