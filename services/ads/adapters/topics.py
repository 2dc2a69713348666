"""The Kafka topics ads produces and consumes (logical names; ADSMON_KAFKA_TOPIC_PREFIX is added on the wire)."""

from __future__ import annotations

ADS_EVENTS = "ads.events.v1"  # produced: bids, auctions, badges, campaigns, key job_id or campaign_id
MARKETPLACE_JOBS = "marketplace.jobs.v1"  # consumed: job posted/hired/cancelled/removed, interactions; key job_id

PRODUCES = (ADS_EVENTS,)
CONSUMES = (MARKETPLACE_JOBS,)
