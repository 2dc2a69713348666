"""Freelancers join a plan (Basic, Freelancer Plus: a monthly grant of Connects) or cancel it."""

from __future__ import annotations

from adsmon.billing.v1 import billing_pb2 as pb
from adsmon.billing.v1 import billing_pb2_grpc

from deploy.sim.core import Sim
from deploy.sim.flows.purchases import payment_method


class Memberships:
    name, service, weight = "memberships", "billing", 0.3

    def step(self, sim: Sim) -> None:
        account = sim.rng.choice(sim.world.freelancers)
        stub = billing_pb2_grpc.BillingServiceStub
        if account in sim.world.members:
            request = pb.CancelMembershipRequest(request_id=sim.id("cancel"), account_id=account)
            if sim.call("billing", stub, "CancelMembership", request) is not None:
                sim.world.members.discard(account)
            return
        start = pb.StartMembershipRequest(request_id=sim.id("join"), account_id=account,
                                          plan=sim.rng.choice((pb.PLAN_BASIC, pb.PLAN_FREELANCER_PLUS)),
                                          payment_method=payment_method(sim))
        reply = sim.call("billing", stub, "StartMembership", start, moves=lambda r: r.granted_connects)
        if reply is not None:
            sim.world.members.add(account)
