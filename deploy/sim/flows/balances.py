"""Freelancers look at their Connects: connects.GetBalance (the read side of the ledger)."""

from __future__ import annotations

from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc

from deploy.sim.core import Sim


class Balances:
    name, service, weight = "balances", "connects", 1.5

    def step(self, sim: Sim) -> None:
        request = pb.GetBalanceRequest(account_id=sim.rng.choice(sim.world.freelancers))
        sim.call("connects", connects_pb2_grpc.ConnectsServiceStub, "GetBalance", request)
