"""Promoted profiles' use cases over fakes: campaigns, placements, click charging and de-duplication."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.ads.adapters.promoted_events import ProtoPromotedEvents
from services.ads.adapters.promoted_index import InMemoryPlacementIndex
from services.ads.domain.promoted import ChangeCampaignState, ClickOutcome, CreateCampaign, TokenSigner
from services.ads.service_layer import promoted as uc
from services.kit import errors
from tests.conftest import unique
from tests.unit.ads.promoted_fakes import Clock, FakeConnects, FakeMetrics, FakePromotedUnitOfWork, Store


class World:
    def __init__(self, *, dedup: bool = True, reserve: int = 1, cap: int = 1000, balance: int = 10_000) -> None:
        self.clock = Clock()
        self.store = Store()
        self.connects = FakeConnects()
        self.balance = balance
        self.metrics = FakeMetrics()
        self.events = ProtoPromotedEvents()
        self.rules = uc.Rules(reserve=reserve, click_dedup=dedup, default_frequency_cap=cap)
        self.index = InMemoryPlacementIndex(reserve=reserve, pacing=False)
        self.signer = TokenSigner(b"k" * 32, window=timedelta(minutes=30))
        self.charger = uc.ClickCharger(self.uow, self.connects, self.index, self.signer, self.events, self.metrics,
                                       self.rules)

    def uow(self) -> FakePromotedUnitOfWork:
        return FakePromotedUnitOfWork(self.store)

    def create(self, bid: int = 5, budget: int = 100, category: str = "python", freelancer: str | None = None):  # type: ignore[no-untyped-def]
        freelancer = freelancer or unique("fl")
        self.connects.balances.setdefault(freelancer, self.balance)
        c = uc.create_campaign(self.uow(), CreateCampaign(unique("req"), freelancer, category, bid, budget),
                               self.events, self.rules, self.clock())
        self.index.apply([c], [])
        return c

    def place(self, viewer: str = "v", slots: int = 3, category: str = "python") -> list[uc.Served]:
        return uc.get_placements(self.index, self.signer, self.metrics, category, viewer, slots, self.clock())

    def click(self, token: str, request_id: str | None = None) -> uc.ClickResult:
        return self.charger.record_click(request_id or unique("click"), token, self.clock())

    def event_types(self) -> list[str]:
        return [e.type.rsplit(".", 1)[1] for _, e in self.store.outbox]


def test_a_click_charges_the_placement_price_once_through_the_ledger() -> None:
    w = World()
    low, high = w.create(bid=4), w.create(bid=9)
    first, second = w.place()
    assert (first.winner.campaign, first.winner.price, second.winner.price) == (high, 4, 1)
    result = w.click(first.token)
    assert result == uc.ClickResult(ClickOutcome.CHARGED, high.campaign_id, 4)
    assert w.connects.spent_by(high.freelancer_id) == 4 and w.connects.spent_by(low.freelancer_id) == 0
    assert w.event_types()[-1] == "PlacementClicked"


def test_a_second_click_on_the_same_token_is_a_free_duplicate() -> None:
    w = World(reserve=5)
    c = w.create(bid=5)
    (p,) = w.place()
    outcomes = [w.click(p.token).outcome for _ in range(3)]
    assert outcomes == [ClickOutcome.CHARGED, ClickOutcome.DUPLICATE, ClickOutcome.DUPLICATE]
    assert w.connects.spent_by(c.freelancer_id) == 5 and len(w.connects.spends) == 1
    assert [o for o, _ in w.metrics.clicks] == outcomes


def test_a_retried_click_request_returns_the_first_answer_and_charges_nothing_more() -> None:
    w = World(reserve=5)
    c = w.create(bid=5)
    (p,) = w.place()
    first = w.click(p.token, "req-1")
    assert w.click(p.token, "req-1") == first
    assert w.connects.spent_by(c.freelancer_id) == 5


def test_the_same_request_id_for_another_token_is_refused_as_reused() -> None:
    w = World()
    w.create(bid=5)
    (p1,), (p2,) = w.place(viewer="v1"), w.place(viewer="v2")
    w.click(p1.token, "req-1")
    with pytest.raises(errors.AlreadyExists) as err:
        w.click(p2.token, "req-1")
    assert err.value.reason == "REQUEST_ID_REUSED"


def test_with_deduplication_off_every_click_request_charges() -> None:
    w = World(dedup=False, reserve=5)
    c = w.create(bid=5)
    (p,) = w.place()
    assert [w.click(p.token).outcome for _ in range(2)] == [ClickOutcome.CHARGED] * 2
    assert w.connects.spent_by(c.freelancer_id) == 10


def test_a_campaign_never_spends_more_than_its_budget_plus_one_bid_and_stops_being_served() -> None:
    w = World(reserve=7)
    c = w.create(bid=7, budget=20)
    results = []
    for i in range(6):
        placements = w.place(viewer=f"v{i}")
        if not placements:
            break
        results.append(w.click(placements[0].token).outcome)
    assert results == [ClickOutcome.CHARGED] * 3  # 7 + 7 + 7 = 21 < 20 + 7; then not served any more
    assert w.place(viewer="someone-new") == []
    assert w.connects.spent_by(c.freelancer_id) == 21
    assert "CampaignBudgetExhausted" in w.event_types()


def test_clicks_on_tokens_served_before_exhaustion_are_recorded_but_not_charged() -> None:
    w = World(reserve=10)
    c = w.create(bid=10, budget=10)
    tokens = [w.place(viewer=f"v{i}")[0].token for i in range(3)]
    outcomes = [w.click(t).outcome for t in tokens]
    assert outcomes == [ClickOutcome.CHARGED, ClickOutcome.BUDGET_EXHAUSTED, ClickOutcome.BUDGET_EXHAUSTED]
    assert w.connects.spent_by(c.freelancer_id) == 10
    _, spent = uc.get_campaign(w.uow(), c.campaign_id, w.clock())
    assert spent == 10


def test_an_owner_who_cannot_pay_is_not_charged_and_the_campaign_stops_for_the_day() -> None:
    w = World(balance=3, reserve=5)
    c = w.create(bid=5, budget=100)
    (p,) = w.place()
    assert w.click(p.token).outcome is ClickOutcome.INSUFFICIENT_CONNECTS
    assert w.place(viewer="other") == []
    _, spent = uc.get_campaign(w.uow(), c.campaign_id, w.clock())
    assert spent == 0 and w.connects.spends == {}
    w.clock.advance(days=1)
    assert [s.winner.campaign for s in w.place(viewer="other")] == [c]  # a new day, a new budget


def click_while_the_ledger_is_down(w: World):  # type: ignore[no-untyped-def]
    """A campaign, a placement, and a click (request "req-1") that the ledger did not answer."""
    c = w.create(bid=5)
    (p,) = w.place()
    w.connects.down = True
    with pytest.raises(errors.Unavailable):
        w.click(p.token, "req-1")
    return c, p


def test_a_ledger_that_does_not_answer_leaves_the_click_pending_and_a_retry_charges_it_once() -> None:
    w = World(reserve=5)
    c, p = click_while_the_ledger_is_down(w)
    assert w.metrics.connects_errors == ["LEDGER_UNAVAILABLE"]
    assert w.click(p.token, "req-2").outcome is ClickOutcome.DUPLICATE  # another request: never a second charge
    w.connects.down = False
    assert w.click(p.token, "req-1").outcome is ClickOutcome.CHARGED
    assert w.connects.spent_by(c.freelancer_id) == 5


def test_the_resumer_finishes_a_pending_click_and_its_requester_gets_the_same_answer() -> None:
    w = World(reserve=5)
    c, p = click_while_the_ledger_is_down(w)
    w.connects.down = False
    assert w.charger.resume_pending_clicks(w.clock(), older_than=timedelta(seconds=30)) == 0  # too young
    w.clock.advance(seconds=31)
    assert w.charger.resume_pending_clicks(w.clock(), older_than=timedelta(seconds=30)) == 1
    assert w.click(p.token, "req-1") == uc.ClickResult(ClickOutcome.CHARGED, c.campaign_id, 5)
    assert w.connects.spent_by(c.freelancer_id) == 5


def test_paused_campaigns_are_not_placed_and_resumed_ones_are() -> None:
    w = World()
    c = w.create(bid=5)
    paused = uc.change_campaign_state(w.uow(), ChangeCampaignState(unique("r"), c.campaign_id, True), w.events,
                                      w.clock())
    w.index.apply([paused], [])
    assert w.place() == []
    again = uc.change_campaign_state(w.uow(), ChangeCampaignState(unique("r"), c.campaign_id, True), w.events,
                                     w.clock())
    assert again == paused  # pausing a paused campaign changes nothing
    resumed = uc.change_campaign_state(w.uow(), ChangeCampaignState(unique("r"), c.campaign_id, False), w.events,
                                       w.clock())
    w.index.apply([resumed], [])
    assert [s.winner.campaign for s in w.place()] == [resumed]
    assert w.event_types() == ["CampaignCreated", "CampaignPaused", "CampaignResumed"]


def test_creating_a_campaign_twice_with_one_request_id_creates_one() -> None:
    w = World()
    cmd = CreateCampaign("req-x", "fl-1", "python", 5, 50)
    a = uc.create_campaign(w.uow(), cmd, w.events, w.rules, w.clock())
    b = uc.create_campaign(w.uow(), cmd, w.events, w.rules, w.clock())
    assert a == b and len(w.store.campaigns) == 1
    with pytest.raises(errors.AlreadyExists):
        uc.create_campaign(w.uow(), CreateCampaign("req-x", "fl-1", "python", 6, 50), w.events, w.rules, w.clock())


def test_an_unknown_campaign_is_not_found() -> None:
    w = World()
    with pytest.raises(errors.NotFound) as err:
        uc.get_campaign(w.uow(), "cmp-nope", w.clock())
    assert err.value.reason == "CAMPAIGN_NOT_FOUND"


def test_list_campaigns_pages_newest_first() -> None:
    w = World()
    made = []
    for _ in range(5):
        made.append(w.create(freelancer="fl-pages"))
        w.clock.advance(seconds=1)
    page, cursor = uc.list_campaigns(w.uow(), "fl-pages", 2, None, w.clock())
    seen = [c for c, _ in page]
    while cursor is not None:
        page, cursor = uc.list_campaigns(w.uow(), "fl-pages", 2, cursor, w.clock())
        seen += [c for c, _ in page]
    assert seen == made[::-1]


def test_placements_are_validated_and_counted_for_the_fill_rate() -> None:
    w = World()
    w.create()
    for slots in (0, 11):
        with pytest.raises(errors.InvalidArgument):
            w.place(slots=slots)
    with pytest.raises(errors.InvalidArgument):
        w.place(viewer="")
    assert len(w.place(slots=4)) == 1
    assert (w.metrics.requested, w.metrics.served) == (4, 1)


def test_pacing_holds_a_campaign_back_when_it_spends_ahead_of_the_day_and_lets_it_go_later() -> None:
    w = World(reserve=10)
    w.index = InMemoryPlacementIndex(reserve=10, pacing=True, pacing_headroom_seconds=0)
    w.charger.index = w.index
    w.clock.now = w.clock.now.replace(hour=6, minute=0)  # a quarter of the day: 240 of 960 may be spent
    c = w.create(bid=10, budget=960)
    charged = 0
    for i in range(40):
        placements = w.place(viewer=f"v{i}")
        if not placements:
            break
        charged += w.click(placements[0].token).charged
    assert charged == 240  # 24 clicks, then held back though 720 of the budget is left
    w.clock.advance(hours=6)
    assert [s.winner.campaign for s in w.place(viewer="later")] == [c]


def test_a_ledger_that_refuses_ads_itself_leaves_the_click_pending_instead_of_stopping_the_campaign() -> None:
    w = World(reserve=5)
    c = w.create(bid=5)
    (p,) = w.place()

    def refuse(*_: object) -> None:
        raise errors.PermissionDenied("CALLER_NOT_ALLOWED", "caller 'ads' may not spend")

    w.connects.spend = refuse  # type: ignore[method-assign, assignment]
    with pytest.raises(errors.PermissionDenied):
        w.click(p.token, "req-1")
    assert w.metrics.connects_errors == ["CALLER_NOT_ALLOWED"]
    assert [s.winner.campaign for s in w.place(viewer="other")] == [c]  # still served: not the wallet's fault
