"""Freelancers buy Connects: billing.PurchaseConnects (a bundle or a custom quantity, a sandbox card).

Bundles come from billing's own ListBundles (asked once). Cards are the sandbox provider's test cards
(services/billing/adapters/sandbox_provider.py): most are captured at once, some later (a webhook), a few
decline or are disputed after capture (a chargeback). Not drawn: pm_card_transient and pm_card_timeout, whose
provider failure billing answers UNAVAILABLE: a server-side code the availability SLO counts, so a demo using
them would page (tests/e2e cover those paths).
"""

from __future__ import annotations

from adsmon.billing.v1 import billing_pb2 as pb
from adsmon.billing.v1 import billing_pb2_grpc

from deploy.sim.core import Sim

PAYMENT_METHODS = (("pm_card_visa", 15), ("pm_card_async", 2), ("pm_card_declined", 1),
                   ("pm_card_insufficient_funds", 1), ("pm_card_dispute", 1))


def payment_method(sim: Sim) -> str:
    """A sandbox test card, drawn with PAYMENT_METHODS' weights."""
    return sim.rng.choices([m for m, _ in PAYMENT_METHODS], [w for _, w in PAYMENT_METHODS])[0]


class Purchases:
    name, service, weight = "purchases", "billing", 2.0

    def __init__(self) -> None:
        self.bundles: list[str] | None = None

    def step(self, sim: Sim) -> None:
        if self.bundles is None:
            reply = sim.call("billing", billing_pb2_grpc.BillingServiceStub, "ListBundles",
                             pb.ListBundlesRequest(account_type=pb.ACCOUNT_TYPE_FREELANCER))
            self.bundles = [b.bundle_id for b in reply.bundles] if reply is not None else []
            return
        request = pb.PurchaseConnectsRequest(request_id=sim.id("buy"), account_id=sim.rng.choice(sim.world.freelancers),
                                             payment_method=payment_method(sim),
                                             account_type=pb.ACCOUNT_TYPE_FREELANCER)
        if self.bundles and sim.rng.random() < 0.8:
            request.bundle_id = sim.rng.choice(self.bundles)
        else:
            request.quantity = sim.rng.choice((15, 25, 100))
        sim.call("billing", billing_pb2_grpc.BillingServiceStub, "PurchaseConnects", request,
                 moves=lambda r: r.purchase.connects if r.purchase.state == pb.PURCHASE_STATE_COMPLETED else 0)
