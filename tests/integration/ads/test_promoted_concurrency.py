"""Money safety under 64 concurrent clients on PostgreSQL: budgets, frequency caps, out-of-budget serving.

Each client is a real gRPC caller of an in-process ads replica (two replicas on one database for the
budget across replicas). The ledger is the fake (the real one is in test_promoted_connects.py): what is
checked here is what ads lets through.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from adsmon.ads.v1 import ads_pb2 as pb

from tests.conftest import unique
from tests.integration.ads.promoted_support import Replica, promoted_engine_fixture, promoted_replica, settings
from tests.unit.ads.promoted_fakes import FakeConnects

pytestmark = pytest.mark.integration
CLIENTS = 64


engine = promoted_engine_fixture()


async def create(r: Replica, freelancer: str, category: str, bid: int, budget: int) -> str:
    reply = await r.stub.CreateCampaign(pb.CreateCampaignRequest(
        request_id=unique("req"), freelancer_id=freelancer, category=category, max_cpc_connects=bid,
        daily_budget_connects=budget), metadata=r.metadata)
    return reply.campaign.campaign_id


@dataclass
class Trace:
    """What the clients saw, with monotonic times: placements by request start, clicks by reply time."""

    placements: list[tuple[float, list[str]]] = field(default_factory=list)
    clicks: list[tuple[float, str, int, int]] = field(default_factory=list)  # replied at, campaign, outcome, charged


async def click_everything(replicas: list[Replica], category: str, rounds: int, trace: Trace, client: int) -> None:
    """One client: search, then click every placement twice at once (a double click), `rounds` times."""
    for i in range(rounds):
        r = replicas[(client + i) % len(replicas)]
        started = time.monotonic()
        reply = await r.stub.GetPlacements(pb.GetPlacementsRequest(
            category=category, viewer_id=f"viewer-{client}-{i}", slots=3), metadata=r.metadata)
        trace.placements.append((started, [p.campaign_id for p in reply.placements]))

        async def click(p: pb.Placement, via: Replica) -> None:
            answer = await via.stub.RecordClick(pb.RecordClickRequest(
                request_id=unique("click"), placement_token=p.placement_token), metadata=via.metadata)
            trace.clicks.append((time.monotonic(), answer.campaign_id, answer.outcome, answer.charged_connects))

        other = replicas[(client + i + 1) % len(replicas)]
        await asyncio.gather(*(click(p, via) for p in reply.placements for via in (r, other)))


async def test_64_clients_never_spend_past_the_budget_plus_one_bid_nor_serve_an_exhausted_campaign(
        engine, auth_secret) -> None:
    connects = FakeConnects()
    category = unique("cat")
    owners = {unique("fl"): (bid, budget) for bid, budget in ((9, 50), (7, 30), (5, 23), (3, 100))}
    connects.balances.update({o: 10_000 for o in owners})
    async with promoted_replica(engine, auth_secret, connects) as a, \
            promoted_replica(engine, auth_secret, connects) as b:
        ids = {await create(a, owner, category, bid, budget): (owner, bid, budget)
               for owner, (bid, budget) in owners.items()}
        await asyncio.sleep(0.6)  # b's index sync picks the campaigns up
        trace = Trace()
        await asyncio.gather(*(click_everything([a, b], category, 6, trace, c) for c in range(CLIENTS)))

    charged = Counter[str]()
    for _, campaign_id, outcome, amount in trace.clicks:
        assert outcome != pb.CLICK_OUTCOME_CHARGED or amount > 0
        charged[campaign_id] += amount
    for campaign_id, (owner, bid, budget) in ids.items():
        spent = connects.spent_by(owner)
        assert spent == charged[campaign_id], "what clicks report charged is what the ledger took"
        assert spent < budget + bid, f"{campaign_id} spent {spent} of {budget} (max bid {bid})"
    exhausted = [cid for cid, (owner, _, budget) in ids.items() if connects.spent_by(owner) >= budget]
    assert exhausted, "the load was meant to exhaust some budgets"
    # Each click answered BUDGET_EXHAUSTED means the campaign was out of budget by then; from that moment no
    # search on the replica that answered (the next request) may place it; across replicas within one sync.
    for cid in exhausted:
        out_at = min(t for t, c, outcome, _ in trace.clicks
                     if c == cid and outcome == pb.CLICK_OUTCOME_BUDGET_EXHAUSTED)
        late = [started for started, placed in trace.placements if cid in placed and started > out_at + 0.5]
        assert not late, f"{cid} placed {len(late)} times after it ran out of budget"
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT campaign_id, spent FROM promoted_budget_days")).all())
        duplicates = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT token_id FROM promoted_clicks WHERE outcome = 'CHARGED' "
            "GROUP BY token_id HAVING count(*) > 1) x")).scalar_one()
    assert {cid: rows[cid] for cid in exhausted} == {cid: connects.spent_by(ids[cid][0]) for cid in exhausted}
    assert duplicates == 0


async def test_on_one_replica_an_exhausted_campaign_is_not_served_on_the_next_request(engine, auth_secret) -> None:
    connects = FakeConnects()
    category, owner = unique("cat"), unique("fl")
    connects.balances[owner] = 10_000
    async with promoted_replica(engine, auth_secret, connects, settings=settings(reserve_connects=5)) as r:
        cid = await create(r, owner, category, 5, 40)
        trace = Trace()
        await asyncio.gather(*(click_everything([r], category, 4, trace, c) for c in range(CLIENTS)))
    assert connects.spent_by(owner) == 40
    charged_replies = [t for t, c, outcome, _ in trace.clicks if outcome == pb.CLICK_OUTCOME_CHARGED]
    refused = [t for t, c, outcome, _ in trace.clicks if outcome == pb.CLICK_OUTCOME_BUDGET_EXHAUSTED]
    out_at = min([max(charged_replies), *refused])  # by then the 8th charge had reserved the last of the budget
    late = [started for started, placed in trace.placements if cid in placed and started > out_at]
    assert not late, f"placed {len(late)} times after the budget ran out"


async def test_64_concurrent_searches_by_one_viewer_never_exceed_the_frequency_cap(engine, auth_secret) -> None:
    category = unique("cat")
    async with promoted_replica(engine, auth_secret, FakeConnects(), settings=settings(frequency_cap=3)) as r:
        ids = [await create(r, unique("fl"), category, bid, 1000) for bid in (9, 8, 7, 6, 5)]

        async def search() -> list[str]:
            reply = await r.stub.GetPlacements(pb.GetPlacementsRequest(category=category, viewer_id="one-viewer",
                                                                       slots=2), metadata=r.metadata)
            return [p.campaign_id for p in reply.placements]

        results = await asyncio.gather(*(search() for _ in range(CLIENTS)))
    seen = Counter(cid for placed in results for cid in placed)
    assert seen == {cid: 3 for cid in ids}  # every campaign exactly up to its cap, never past it
    assert sum(1 for placed in results if placed) == 9  # (a, b) x3, (c, d) x3, (e) x3, then nothing
