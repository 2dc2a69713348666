"""Freelancers submit proposals: connects.Spend(PROPOSAL) of the job's cost, as the marketplace.

Some freelancers run out of Connects (INSUFFICIENT_CONNECTS: a refusal, not an error), and a few requests
are retried with the same request_id, as a client behind a flaky network does (answered from connects'
idempotency store).
"""

from __future__ import annotations

from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc

from deploy.sim.core import Sim

RETRY_SHARE = 0.05


class Proposals:
    name, service, weight = "proposals", "connects", 6.0

    def step(self, sim: Sim) -> None:
        job = sim.world.open_job(sim.rng)
        if job is None:
            return
        freelancer, proposal_id = sim.rng.choice(sim.world.freelancers), sim.id("prop")
        job.proposals.append((proposal_id, freelancer))
        if job.cost == 0:
            return  # free to apply: nothing moves
        request = pb.SpendRequest(request_id=sim.id("spend"), account_id=freelancer, amount=job.cost,
                                  reason=pb.SPEND_REASON_PROPOSAL, reference=f"job:{job.job_id}/proposal:{proposal_id}")
        reply = sim.call("connects", connects_pb2_grpc.ConnectsServiceStub, "Spend", request,
                         moves=lambda r: r.transaction.amount)
        if reply is not None:
            job.spent = True
            if sim.rng.random() < RETRY_SHARE:
                sim.call("connects", connects_pb2_grpc.ConnectsServiceStub, "Spend", request)
