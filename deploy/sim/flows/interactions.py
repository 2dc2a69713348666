"""Clients act on proposals: ads.RecordInteraction (an interaction while boosted commits the bid to pay)."""

from __future__ import annotations

from adsmon.ads.v1 import ads_pb2 as pb
from adsmon.ads.v1 import ads_pb2_grpc

from deploy.sim.core import Sim

_KINDS = (pb.INTERACTION_KIND_VIEWED, pb.INTERACTION_KIND_OPENED, pb.INTERACTION_KIND_MESSAGED,
          pb.INTERACTION_KIND_SHORTLISTED, pb.INTERACTION_KIND_OFFER_SENT, pb.INTERACTION_KIND_ARCHIVED,
          pb.INTERACTION_KIND_DECLINED)


class Interactions:
    name, service, weight = "interactions", "ads", 3.0

    def step(self, sim: Sim) -> None:
        picked = sim.world.pick_proposal(sim.rng)
        if picked is None:
            return
        job, proposal_id, _ = picked
        kind = sim.rng.choices(_KINDS, (10, 6, 2, 1, 0.5, 1, 1))[0]
        request = pb.RecordInteractionRequest(request_id=sim.id("ix"), job_id=job.job_id, proposal_id=proposal_id,
                                              kind=kind)
        sim.call("ads", ads_pb2_grpc.AdsServiceStub, "RecordInteraction", request)
