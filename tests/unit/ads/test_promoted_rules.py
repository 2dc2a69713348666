"""Promoted profiles' pure rules: ranking, GSP prices with the reserve, pacing, caps, placement tokens."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta

import pytest

from services.ads.adapters.promoted_index import InMemoryPlacementIndex
from services.ads.domain.promoted import (
    BidTooLow,
    BudgetDay,
    Campaign,
    CampaignState,
    CreateCampaign,
    FrequencyCaps,
    PlacementExpired,
    PlacementTokenInvalid,
    Priced,
    TokenSigner,
    paced_allowance,
    price_winners,
    rank_key,
    servable,
)
from services.kit.errors import InvalidArgument

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
KEY = b"k" * 32


def campaign(cid: str, bid: int, quality_bps: int = 10_000, *, category: str = "python", budget: int = 1000,
             created: datetime = T0, state: CampaignState = CampaignState.ACTIVE, cap: int = 100) -> Campaign:
    return Campaign(cid, f"fl-{cid}", category, bid, budget, quality_bps, state, created, created,
                    frequency_cap=cap)


def ranked(*cs: Campaign) -> list[Campaign]:
    return sorted(cs, key=rank_key)


def test_ranking_is_by_bid_times_quality_not_by_bid_alone() -> None:
    a, b, c = campaign("a", 10), campaign("b", 8, 15_000), campaign("c", 5)
    assert [x.campaign_id for x in ranked(a, b, c)] == ["b", "a", "c"]


def test_equal_scores_rank_the_older_campaign_first_then_the_smaller_id() -> None:
    old = campaign("z", 10, created=T0 - timedelta(days=1))
    new_a, new_b = campaign("b", 10), campaign("a", 5, 20_000)
    assert [x.campaign_id for x in ranked(new_a, new_b, old)] == ["z", "a", "b"]


def test_each_winner_pays_the_next_score_over_its_quality_rounded_up() -> None:
    # b: 8 x 1.5 = 12 > a: 10 x 1.0 > c: 5 x 1.0
    winners = price_winners(ranked(campaign("a", 10), campaign("b", 8, 15_000), campaign("c", 5)), 3, reserve=1)
    assert [(w.campaign.campaign_id, w.position, w.price) for w in winners] == [
        ("b", 1, 7),  # ceil(10 * 1.0 / 1.5) = ceil(6.67)
        ("a", 2, 5),  # 5 * 1.0 / 1.0
        ("c", 3, 1),  # nobody below: the reserve
    ]


def test_the_reserve_is_a_floor_on_every_price_and_the_bid_a_ceiling() -> None:
    winners = price_winners(ranked(campaign("a", 10), campaign("b", 8, 15_000), campaign("c", 6)), 2, reserve=6)
    assert [(w.campaign.campaign_id, w.price) for w in winners] == [("b", 7), ("a", 6)]
    lone = price_winners([campaign("a", 4)], 1, reserve=6)
    assert lone[0].price == 4  # never more than the campaign's own max bid


def test_the_campaign_just_below_the_slots_prices_the_last_winner() -> None:
    winners = price_winners(ranked(campaign("a", 10), campaign("b", 9), campaign("c", 3, 5_000)), 2, reserve=1)
    assert [w.price for w in winners] == [9, 2]  # b pays ceil(3 x 0.5 / 1.0)


def test_prices_are_exact_integer_ceilings_for_odd_qualities() -> None:
    # a: 7 x 0.3333 = 23,331 bps-Connects; b: 2 x 0.9999 = 19,998 (exactly 6 x 3,333) then 19,996 (below 6)
    exact = price_winners(ranked(campaign("a", 7, 3_333), campaign("b", 2, 9_999)), 1, reserve=1)
    below = price_winners(ranked(campaign("a", 7, 3_333), campaign("b", 2, 9_998)), 1, reserve=1)
    assert (exact[0].campaign.campaign_id, exact[0].price) == ("a", 6)
    assert (below[0].campaign.campaign_id, below[0].price) == ("a", 6)  # ceil(5.9994)
    big = price_winners(ranked(campaign("a", 10**9, 10_000), campaign("b", 10**9 - 1, 10_000)), 1, reserve=1)
    assert big[0].price == 10**9 - 1


def test_pacing_spreads_the_budget_through_the_day_with_headroom() -> None:
    midnight = datetime(2026, 3, 2, tzinfo=UTC)
    assert paced_allowance(2400, midnight, 3600) == 100
    assert paced_allowance(2400, midnight + timedelta(hours=12), 3600) == 1300
    assert paced_allowance(2400, midnight + timedelta(hours=23, minutes=30), 3600) == 2400
    assert paced_allowance(7, midnight, 0) == 0


def test_a_campaign_ahead_of_its_pacing_curve_is_not_served_until_the_clock_catches_up() -> None:
    c = campaign("a", 5, budget=2400)
    morning = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # allowance: 2 hours' share = 200
    day = BudgetDay("a", morning.date(), 200)
    assert not servable(c, day, morning, pacing=True, headroom_seconds=3600)
    assert servable(c, day, morning + timedelta(minutes=30), pacing=True, headroom_seconds=3600)
    assert servable(c, day, morning, pacing=False, headroom_seconds=3600)


def test_an_exhausted_stopped_or_paused_campaign_is_not_servable_but_yesterdays_spend_does_not_count() -> None:
    c = campaign("a", 5, budget=100)
    assert not servable(c, BudgetDay("a", T0.date(), 100), T0, pacing=False, headroom_seconds=0)
    assert not servable(c, BudgetDay("a", T0.date(), 0, stopped=True), T0, pacing=False, headroom_seconds=0)
    paused = campaign("a", 5, state=CampaignState.PAUSED)
    assert not servable(paused, None, T0, pacing=False, headroom_seconds=0)
    assert servable(c, BudgetDay("a", T0.date() - timedelta(days=1), 100), T0, pacing=False, headroom_seconds=0)


def test_a_viewer_never_sees_a_campaign_more_often_than_the_cap_and_the_next_one_moves_up() -> None:
    index = InMemoryPlacementIndex(reserve=1, pacing=False)
    index.apply([campaign("a", 10, cap=2), campaign("b", 8, cap=2), campaign("c", 6, cap=2)], [])
    shown = [[w.campaign.campaign_id for w in index.choose("python", "viewer-1", 1, T0)] for _ in range(7)]
    assert shown == [["a"], ["a"], ["b"], ["b"], ["c"], ["c"], []]
    assert [w.campaign.campaign_id for w in index.choose("python", "viewer-2", 1, T0)] == ["a"]
    assert [w.campaign.campaign_id for w in index.choose("python", "viewer-1", 1, T0 + timedelta(days=1))] == ["a"]


def test_capped_campaigns_do_not_set_the_price_of_the_winners() -> None:
    index = InMemoryPlacementIndex(reserve=1, pacing=False)
    index.apply([campaign("a", 10, cap=1), campaign("b", 8, cap=1), campaign("c", 3, cap=5)], [])
    assert [w.price for w in index.choose("python", "v", 2, T0)] == [8, 3]
    # a and b are capped for v now: c is alone and pays the reserve
    assert [(w.campaign.campaign_id, w.price) for w in index.choose("python", "v", 2, T0)] == [("c", 1)]


def test_the_index_keeps_the_newest_revision_and_spend_never_goes_back_within_a_day() -> None:
    index = InMemoryPlacementIndex(reserve=1, pacing=False)
    a = campaign("a", 10, budget=50)
    index.apply([a], [])
    index.apply([a.paused(T0)], [])
    index.apply([a], [])  # an older revision read by a slow poll
    assert index.choose("python", "v", 3, T0) == []
    index.apply([a.paused(T0).resumed(T0)], [BudgetDay("a", T0.date(), 50)])
    index.apply([], [BudgetDay("a", T0.date(), 20)])  # a poll that read the row before the last click
    assert index.choose("python", "v", 3, T0) == []
    assert index.day("a") == BudgetDay("a", T0.date(), 50)


def test_placements_only_come_from_the_category_searched() -> None:
    index = InMemoryPlacementIndex(reserve=1, pacing=False)
    index.apply([campaign("a", 10, category="go"), campaign("b", 2)], [])
    assert [w.campaign.campaign_id for w in index.choose("python", "v", 3, T0)] == ["b"]


def test_a_signed_token_carries_campaign_price_and_viewer() -> None:
    signer = TokenSigner(KEY, window=timedelta(minutes=30))
    claim, token = signer.sign(Priced(campaign("a", 10), 2, 7), "viewer-9", T0)
    back = signer.verify(token, T0 + timedelta(minutes=29))
    assert back == claim
    assert (back.campaign_id, back.price, back.viewer_id, back.position) == ("a", 7, "viewer-9", 2)


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
    lambda t: t.replace("pt1~", "pt2~", 1),
    lambda t: t.replace("~7~", "~1~", 1),  # a cheaper price
    lambda t: t.replace("~v~", "~w~", 1),  # another viewer
    lambda t: "garbage",
    lambda t: "",
])
def test_a_tampered_or_foreign_token_is_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    signer = TokenSigner(KEY, window=timedelta(minutes=30))
    _, token = signer.sign(Priced(campaign("a", 10), 1, 7), "v", T0)
    with pytest.raises(PlacementTokenInvalid):
        signer.verify(tamper(token), T0)


def test_a_token_signed_with_another_key_is_refused() -> None:
    _, token = TokenSigner(b"x" * 32, window=timedelta(minutes=30)).sign(Priced(campaign("a", 10), 1, 7), "v", T0)
    with pytest.raises(PlacementTokenInvalid):
        TokenSigner(KEY, window=timedelta(minutes=30)).verify(token, T0)


def test_a_token_past_its_click_window_is_expired() -> None:
    signer = TokenSigner(KEY, window=timedelta(minutes=30))
    _, token = signer.sign(Priced(campaign("a", 10), 1, 7), "v", T0)
    with pytest.raises(PlacementExpired) as err:
        signer.verify(token, T0 + timedelta(minutes=30, seconds=1))
    assert err.value.code == "FAILED_PRECONDITION" and err.value.reason == "PLACEMENT_EXPIRED"


@pytest.mark.parametrize(("bid", "budget", "field"), [
    (0, 10, "max_cpc_connects"), (-3, 10, "max_cpc_connects"), (10**12, 10**12, "max_cpc_connects"),
    (5, 0, "daily_budget_connects"), (5, 4, "daily_budget_connects"),
])
def test_zero_negative_absurd_bids_and_budgets_are_invalid(bid: int, budget: int, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        CreateCampaign("r1", "fl-1", "python", bid, budget).validate(reserve=1)
    assert err.value.metadata["field"] == field


def test_a_bid_below_the_reserve_is_too_low() -> None:
    with pytest.raises(BidTooLow) as err:
        CreateCampaign("r1", "fl-1", "python", 2, 100).validate(reserve=3)
    assert err.value.reason == "BID_TOO_LOW"


def test_a_bulk_load_ranks_like_one_by_one_changes() -> None:
    many = [campaign(f"c{i:04}", 1 + i % 37, 5_000 + (i * 7919) % 15_000, category=f"cat-{i % 3}")
            for i in range(1500)]
    bulk, single = (InMemoryPlacementIndex(reserve=1, pacing=False) for _ in range(2))
    bulk.apply(many, [])
    for c in many:
        single.apply([c], [])
    bulk.apply([many[0].paused(T0)] * 1001, [])  # a big batch with a change: the paused one leaves the ranking
    single.apply([many[0].paused(T0)], [])
    for cat in ("cat-0", "cat-1", "cat-2"):
        assert bulk.choose(cat, "v", 10, T0) == single.choose(cat, "v", 10, T0)


def test_each_campaign_has_its_own_cap_and_zero_means_the_default() -> None:
    index = InMemoryPlacementIndex(reserve=1, pacing=False)
    index.apply([campaign("once", 10, cap=1), campaign("thrice", 5, cap=3)], [])
    shown = [[w.campaign.campaign_id for w in index.choose("python", "v", 2, T0)] for _ in range(4)]
    assert shown == [["once", "thrice"], ["thrice"], ["thrice"], []]
    assert CreateCampaign("r", "f", "python", 5, 50).new_campaign(T0, 10_000, default_cap=3).frequency_cap == 3
    assert CreateCampaign("r", "f", "python", 5, 50, 7).new_campaign(T0, 10_000, default_cap=3).frequency_cap == 7
    with pytest.raises(InvalidArgument):
        CreateCampaign("r", "f", "python", 5, 50, 1001).validate(reserve=1)


def test_frequency_counts_of_many_viewers_add_nothing_for_the_garbage_collector_to_scan() -> None:
    caps = FrequencyCaps()
    for v in range(2000):
        for c in ("a", "b", "c"):
            assert caps.reserve(f"viewer-{v}", c, 2, T0.date())
    assert len(caps) == 6000 and caps.seen("viewer-7", "b", T0.date()) == 1
    assert not gc.is_tracked(caps._counts)  # a dict of str to int: no collector pause grows with the viewers


def _brute_totals(index: InMemoryPlacementIndex, ids: list[str], now: datetime) -> tuple[int, int]:
    active = [c for i in ids if (c := index.campaign(i)) is not None and c.state is CampaignState.ACTIVE]
    spent = sum(d.spent for c in active if (d := index.day(c.campaign_id)) is not None and d.day == now.date())
    return sum(c.daily_budget for c in active), spent


@pytest.mark.parametrize("seed", range(20))
def test_the_spend_against_budget_totals_follow_every_change_as_a_full_sum_would(seed: int) -> None:
    # The gauge's sums are kept as campaigns and days change (no sum over the index per scrape): after any mix
    # of new campaigns, newer and stale revisions, pauses, resumes, bulk loads, days merged late, early and
    # stopped, they equal the sum over every campaign.
    import random

    rng = random.Random(seed)
    index = InMemoryPlacementIndex(reserve=1, pacing=False)
    ids = [f"cmp-{i}" for i in range(12)]
    revision = {i: 0 for i in ids}
    days = [T0.date() - timedelta(days=1), T0.date(), T0.date() + timedelta(days=1)]
    for _ in range(300):
        pick = rng.random()
        if pick < 0.45:
            batch = []
            for i in rng.sample(ids, rng.randint(1, 4)):
                revision[i] += rng.choice([1, 1, 0, -1])  # mostly newer, sometimes the same or an older one
                batch.append(Campaign(i, "fl", f"cat-{rng.randint(0, 2)}", rng.randint(1, 9), rng.randint(10, 500),
                                      10_000, rng.choice([CampaignState.ACTIVE, CampaignState.PAUSED]), T0, T0,
                                      revision=max(1, revision[i])))
            if rng.random() < 0.2:  # a bulk load takes the same path as the full load at start
                index._bulk(batch)
            else:
                index.apply(batch, [])
        else:
            d = BudgetDay(rng.choice(ids), rng.choice(days), rng.randint(0, 600), rng.random() < 0.1)
            index.apply([], [d])
        now = datetime.combine(rng.choice(days), T0.timetz())
        assert index.active_totals(now) == _brute_totals(index, ids, now)
