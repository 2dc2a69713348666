"""`marketplace.jobs.v1` -> auctions: JobPosted opens, JobHired closes (captures), JobCancelled/JobRemoved
close releasing every open hold, ProposalInteraction counts like RecordInteraction.

Runs inside the kit's idempotent consumer transaction: the processed_events row, the auction change, its
settlement steps and outbox events commit together, so a redelivered event changes nothing. The
connects side of a cancellation (returning captured boosts and proposal spends) is connects' own consumer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from adsmon.marketplace.v1 import jobs_pb2
from sqlalchemy.engine import Connection

from services.ads.adapters.repository import BoundAdsUnitOfWork
from services.ads.domain.auction import CloseReason, Interaction
from services.ads.service_layer import auctions
from services.ads.service_layer.metrics import Metrics
from services.kit.kafka import Event
from services.kit.prototime import optional_datetime

GROUP_ID = "ads-auctions"

_CLOSES = {
    jobs_pb2.JobHired.DESCRIPTOR.full_name: (jobs_pb2.JobHired, CloseReason.FIRST_HIRE),
    jobs_pb2.JobCancelled.DESCRIPTOR.full_name: (jobs_pb2.JobCancelled, CloseReason.JOB_CANCELLED),
    jobs_pb2.JobRemoved.DESCRIPTOR.full_name: (jobs_pb2.JobRemoved, CloseReason.JOB_REMOVED),
}


def make_handler(clock: Callable[[], datetime], settings: auctions.AuctionSettings,
                 metrics: Metrics) -> Callable[[Connection, Event, object], None]:
    def handle(conn: Connection, event: Event, record: object) -> None:
        kind = event.payload.TypeName()
        uow = BoundAdsUnitOfWork(conn)
        now = clock()
        if kind == jobs_pb2.JobPosted.DESCRIPTOR.full_name:
            posted = jobs_pb2.JobPosted()
            event.payload.Unpack(posted)
            if posted.job_id:
                at = optional_datetime(posted, "posted_at") or now
                auctions.open_auction(uow, posted.job_id, at, now, settings, metrics, event.event_id)
        elif kind in _CLOSES:
            cls, reason = _CLOSES[kind]
            message = cls()
            event.payload.Unpack(message)
            if message.job_id:
                auctions.close(uow, message.job_id, reason, now, settings, metrics, create=True,
                               causation_id=event.event_id)
        elif kind == jobs_pb2.ProposalInteraction.DESCRIPTOR.full_name:
            action = jobs_pb2.ProposalInteraction()
            event.payload.Unpack(action)
            name = jobs_pb2.InteractionKind.Name(action.kind).removeprefix("INTERACTION_KIND_")
            if action.job_id and action.proposal_id and name in Interaction.__members__:
                auctions.interact(uow, action.job_id, action.proposal_id, Interaction(name), now, event.event_id)

    return handle
