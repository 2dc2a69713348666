"""Freelancers switch the availability badge on (a category, a weekly maximum) and off: ads.StartBadge / StopBadge.

A maximum below the category's current price is refused (BADGE_PRICE_ABOVE_MAX), as a real freelancer would be.
"""

from __future__ import annotations

from adsmon.ads.v1 import ads_pb2 as pb
from adsmon.ads.v1 import ads_pb2_grpc

from deploy.sim.core import CATEGORIES, Sim


class Badge:
    name, service, weight = "badge", "ads", 0.5

    def step(self, sim: Sim) -> None:
        freelancer = sim.rng.choice(sim.world.freelancers)
        stub = ads_pb2_grpc.AdsServiceStub
        if freelancer in sim.world.badges:
            request = pb.StopBadgeRequest(request_id=sim.id("badge-stop"), freelancer_id=freelancer)
            if sim.call("ads", stub, "StopBadge", request) is not None:
                sim.world.badges.discard(freelancer)
            return
        request_on = pb.StartBadgeRequest(request_id=sim.id("badge-start"), freelancer_id=freelancer,
                                          weekly_max_connects=sim.rng.choice((5, 10, 14, 20, 40)),
                                          category=sim.rng.choice(CATEGORIES))
        if sim.call("ads", stub, "StartBadge", request_on) is not None:
            sim.world.badges.add(freelancer)
