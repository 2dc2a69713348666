"""Connects coming in: billing's purchase credits and plan grants, the marketplace's bonuses.

Until billing's own purchases and memberships answer, this is how freelancers get Connects: the simulator
calls connects as billing would (PURCHASE, PLAN_GRANT) and as the marketplace does (BONUS).
"""

from __future__ import annotations

from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc

from deploy.sim.core import Sim

_SOURCES = ((pb.LOT_SOURCE_PURCHASE, "billing", (10, 20, 40, 60, 80)), (pb.LOT_SOURCE_PLAN_GRANT, "billing", (10, 100)),
            (pb.LOT_SOURCE_BONUS, "marketplace", (5, 10)))


class Credits:
    name, service, weight = "credits", "connects", 2.0

    def step(self, sim: Sim) -> None:
        source, caller, amounts = sim.rng.choices(_SOURCES, (6, 3, 1))[0]
        account, amount = sim.rng.choice(sim.world.freelancers), sim.rng.choice(amounts)
        request = pb.CreditRequest(request_id=sim.id("credit"), account_id=account, amount=amount, source=source,
                                   reference=sim.id("ref"))
        sim.call("connects", connects_pb2_grpc.ConnectsServiceStub, "Credit", request, caller=caller,
                 moves=lambda reply: reply.transaction.amount)
