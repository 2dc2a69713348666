"""Promoted profiles as protobuf: API messages and the `ads.events.v1` envelopes (aggregate: the campaign)."""

from __future__ import annotations

from datetime import UTC, datetime

from adsmon.ads.v1 import ads_pb2, events_pb2
from adsmon.events.v1.event_pb2 import Event
from google.protobuf.timestamp_pb2 import Timestamp

from services.ads.adapters.topics import ADS_EVENTS
from services.ads.domain.promoted import QUALITY_BASIS, Campaign, CampaignState, Click, ClickOutcome
from services.ads.service_layer.promoted import PromotedEvents
from services.kit.kafka import make_event

PRODUCER = "ads"
STATE = {CampaignState.ACTIVE: ads_pb2.CAMPAIGN_STATE_ACTIVE, CampaignState.PAUSED: ads_pb2.CAMPAIGN_STATE_PAUSED}
OUTCOME: dict[ClickOutcome, ads_pb2.ClickOutcome] = {
    ClickOutcome.CHARGED: ads_pb2.CLICK_OUTCOME_CHARGED, ClickOutcome.DUPLICATE: ads_pb2.CLICK_OUTCOME_DUPLICATE,
    ClickOutcome.BUDGET_EXHAUSTED: ads_pb2.CLICK_OUTCOME_BUDGET_EXHAUSTED,
    ClickOutcome.INSUFFICIENT_CONNECTS: ads_pb2.CLICK_OUTCOME_INSUFFICIENT_CONNECTS,
}  # PENDING is internal: never answered


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return ts


def campaign_pb(c: Campaign, spent_today: int) -> ads_pb2.Campaign:
    return ads_pb2.Campaign(campaign_id=c.campaign_id, freelancer_id=c.freelancer_id, category=c.category,
                            max_cpc_connects=c.max_cpc, daily_budget_connects=c.daily_budget,
                            spent_today_connects=spent_today, state=STATE[c.state],
                            quality_score=c.quality_bps / QUALITY_BASIS,  # display only; ranking uses the bps
                            created_at=timestamp(c.created_at), updated_at=timestamp(c.updated_at),
                            frequency_cap=c.frequency_cap)


def click_outcome_pb(outcome: ClickOutcome) -> ads_pb2.ClickOutcome:
    return OUTCOME[outcome]


class ProtoPromotedEvents(PromotedEvents):
    topic = ADS_EVENTS

    def campaign_created(self, c: Campaign, now: datetime) -> Event:
        return make_event(events_pb2.CampaignCreated(
            campaign_id=c.campaign_id, freelancer_id=c.freelancer_id, category=c.category,
            max_cpc_connects=c.max_cpc, daily_budget_connects=c.daily_budget, frequency_cap=c.frequency_cap),
            c.campaign_id, PRODUCER,
            event_id=f"ads-campaign-{c.campaign_id}-r{c.revision}", occurred_at=now)

    def campaign_state_changed(self, c: Campaign, now: datetime) -> Event:
        payload = (events_pb2.CampaignPaused if c.state is CampaignState.PAUSED else events_pb2.CampaignResumed)(
            campaign_id=c.campaign_id, freelancer_id=c.freelancer_id)
        return make_event(payload, c.campaign_id, PRODUCER, event_id=f"ads-campaign-{c.campaign_id}-r{c.revision}",
                          occurred_at=now)

    def budget_exhausted(self, c: Campaign, spent: int, now: datetime) -> Event:
        return make_event(events_pb2.CampaignBudgetExhausted(
            campaign_id=c.campaign_id, freelancer_id=c.freelancer_id, spent_today_connects=spent),
            c.campaign_id, PRODUCER, event_id=f"ads-campaign-{c.campaign_id}-exhausted-{now.date().isoformat()}",
            occurred_at=now)

    def placement_clicked(self, click: Click, now: datetime) -> Event:
        return make_event(events_pb2.PlacementClicked(
            campaign_id=click.campaign_id, freelancer_id=click.freelancer_id, category=click.category,
            position=click.position, outcome=OUTCOME[click.outcome], charged_connects=click.charged,
            transaction_id=click.transaction_id), click.campaign_id, PRODUCER,
            event_id=f"ads-click-{click.click_key}-{click.request_id}"[:128], occurred_at=now)
