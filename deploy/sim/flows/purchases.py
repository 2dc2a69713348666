"""Freelancers buy Connects: billing.PurchaseConnects (a bundle or a custom quantity, a sandbox card).

Bundles come from billing's own ListBundles (asked once). Most cards succeed; a few are the sandbox
provider's test cards that decline, fail once, or lose the answer (services/billing/adapters/sandbox_provider.py).
"""

from __future__ import annotations

from adsmon.billing.v1 import billing_pb2 as pb
from adsmon.billing.v1 import billing_pb2_grpc

from deploy.sim.core import Sim

PAYMENT_METHODS = (("pm_card_visa", 16), ("pm_card_declined", 1), ("pm_card_transient", 1), ("pm_card_timeout", 1))


class Purchases:
    name, service, weight = "purchases", "billing", 1.0

    def __init__(self) -> None:
        self.bundles: list[str] | None = None

    def step(self, sim: Sim) -> None:
        if self.bundles is None:
            reply = sim.call("billing", billing_pb2_grpc.BillingServiceStub, "ListBundles",
                             pb.ListBundlesRequest(account_type=pb.ACCOUNT_TYPE_FREELANCER))
            self.bundles = [b.bundle_id for b in reply.bundles] if reply is not None else []
            return
        methods, weights = [m for m, _ in PAYMENT_METHODS], [w for _, w in PAYMENT_METHODS]
        request = pb.PurchaseConnectsRequest(request_id=sim.id("buy"), account_id=sim.rng.choice(sim.world.freelancers),
                                             payment_method=sim.rng.choices(methods, weights)[0],
                                             account_type=pb.ACCOUNT_TYPE_FREELANCER)
        if self.bundles and sim.rng.random() < 0.8:
            request.bundle_id = sim.rng.choice(self.bundles)
        else:
            request.quantity = sim.rng.choice((15, 25, 100))
        sim.call("billing", billing_pb2_grpc.BillingServiceStub, "PurchaseConnects", request,
                 moves=lambda r: r.purchase.connects if r.purchase.state == pb.PURCHASE_STATE_COMPLETED else 0)
