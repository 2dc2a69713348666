"""Free Connects from the marketplace: sign-up and readiness-test bonuses, interview rewards (connects.Credit BONUS).

Purchased Connects and plan grants come through billing (the purchases and memberships flows), never straight
from here: a PURCHASE or PLAN_GRANT credit billing does not know of is what its reconciliation reports as a
mismatch (UNKNOWN_CREDIT).
"""

from __future__ import annotations

from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc

from deploy.sim.core import Sim

_BONUSES = ((40, 3), (40, 1), (10, 6))  # (Connects, weight): sign-up, readiness test, interview reward (DOMAIN.md)


class Credits:
    name, service, weight = "credits", "connects", 2.0

    def step(self, sim: Sim) -> None:
        amount = sim.rng.choices([a for a, _ in _BONUSES], [w for _, w in _BONUSES])[0]
        request = pb.CreditRequest(request_id=sim.id("credit"), account_id=sim.rng.choice(sim.world.freelancers),
                                   amount=amount, source=pb.LOT_SOURCE_BONUS, reference=sim.id("ref"))
        sim.call("connects", connects_pb2_grpc.ConnectsServiceStub, "Credit", request, caller="marketplace",
                 moves=lambda reply: reply.transaction.amount)
