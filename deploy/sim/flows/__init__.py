"""The simulator's flows, one module each; FLOWS lists them with their default weights (share of events).

connects flows work today. ads and billing flows are written against their
protos and count UNIMPLEMENTED as "not built" until those services answer.
"""

from __future__ import annotations

from deploy.sim.core import Flow
from deploy.sim.flows.badge import Badge
from deploy.sim.flows.balances import Balances
from deploy.sim.flows.boosts import Boosts
from deploy.sim.flows.campaigns import Campaigns
from deploy.sim.flows.credits import Credits
from deploy.sim.flows.hires import Hires
from deploy.sim.flows.interactions import Interactions
from deploy.sim.flows.jobs import CancelJobs, PostJobs, RemoveJobs
from deploy.sim.flows.memberships import Memberships
from deploy.sim.flows.proposals import Proposals
from deploy.sim.flows.purchases import Purchases
from deploy.sim.flows.searches import Searches


def all_flows() -> list[Flow]:
    return [Credits(), Balances(), PostJobs(), Proposals(), CancelJobs(), RemoveJobs(), Boosts(), Interactions(),
            Hires(), Badge(), Campaigns(), Searches(), Purchases(), Memberships()]
