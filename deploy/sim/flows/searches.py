"""Clients search for talent: ads.GetPlacements (promoted profiles in the results), and click some: RecordClick.

About one placement in ten is clicked, and a few clicks are repeated (a double click: free the second time).
"""

from __future__ import annotations

from adsmon.ads.v1 import ads_pb2 as pb
from adsmon.ads.v1 import ads_pb2_grpc

from deploy.sim.core import CATEGORIES, Sim

CLICK_SHARE, DOUBLE_CLICK_SHARE, MAX_UNCLICKED = 0.1, 0.05, 500


class Searches:
    name, service, weight = "searches", "ads", 4.0

    def step(self, sim: Sim) -> None:
        stub = ads_pb2_grpc.AdsServiceStub
        world = sim.world
        if world.placements and sim.rng.random() < 0.3:
            token = world.placements.pop(sim.rng.randrange(len(world.placements)))
            click = pb.RecordClickRequest(request_id=sim.id("click"), placement_token=token)
            reply = sim.call("ads", stub, "RecordClick", click, moves=lambda r: r.charged_connects)
            if reply is not None and sim.rng.random() < DOUBLE_CLICK_SHARE:
                sim.call("ads", stub, "RecordClick", pb.RecordClickRequest(request_id=sim.id("click"),
                                                                          placement_token=token))
            return
        request = pb.GetPlacementsRequest(category=sim.rng.choice(CATEGORIES), viewer_id=sim.rng.choice(world.clients),
                                          slots=sim.rng.choice((1, 2, 3)))
        reply = sim.call("ads", stub, "GetPlacements", request)
        if reply is not None:
            world.placements += [p.placement_token for p in reply.placements if sim.rng.random() < CLICK_SHARE * 3]
            del world.placements[:-MAX_UNCLICKED]
