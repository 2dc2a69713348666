"""Freelancers boost proposals: ads.PlaceBid (ads holds the bid in Connects), sometimes raising a bid."""

from __future__ import annotations

from adsmon.ads.v1 import ads_pb2 as pb
from adsmon.ads.v1 import ads_pb2_grpc

from deploy.sim.core import Sim


class Boosts:
    name, service, weight = "boosts", "ads", 2.0

    def step(self, sim: Sim) -> None:
        picked = sim.world.pick_proposal(sim.rng)
        if picked is None:
            return
        job, proposal_id, freelancer = picked
        bid = sim.rng.choice((1, 2, 3, 5, 8, 10, 15, 20, 30, 50))
        request = pb.PlaceBidRequest(request_id=sim.id("bid"), job_id=job.job_id, proposal_id=proposal_id,
                                     freelancer_id=freelancer, bid_connects=bid)
        if sim.call("ads", ads_pb2_grpc.AdsServiceStub, "PlaceBid", request) is not None:
            job.spent = True  # a captured boost is returned on cancel too
