"""Connects coming in from the marketplace: bonuses (connects.Credit, source BONUS).

Purchases and plan grants come from billing itself (the purchases and memberships flows): the simulator
no longer credits PURCHASE or PLAN_GRANT as if it were billing, since billing's reconciliation rightly
reports such credits as unknown to it.
"""

from __future__ import annotations

from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc

from deploy.sim.core import Sim

AMOUNTS = (5, 10, 20, 40)


class Credits:
    name, service, weight = "credits", "connects", 2.0

    def step(self, sim: Sim) -> None:
        account, amount = sim.rng.choice(sim.world.freelancers), sim.rng.choice(AMOUNTS)
        request = pb.CreditRequest(request_id=sim.id("credit"), account_id=account, amount=amount,
                                   source=pb.LOT_SOURCE_BONUS, reference=sim.id("ref"))
        sim.call("connects", connects_pb2_grpc.ConnectsServiceStub, "Credit", request, caller="marketplace",
                 moves=lambda reply: reply.transaction.amount)
