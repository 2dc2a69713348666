"""Hostile records on every consumed topic (issue #11, "Hostile input"): malformed, oversized, wrong-schema.

Each service runs as a real process with its consumers on, in a topic namespace of its own. On
marketplace.jobs.v1 (ads' auctions and connects' job returns) and connects.ledger.v1 (billing's books) the
test writes records that are not an Event at all (text, JSON, random bytes), an oversized one, and
wrong-schema ones (another message type's bytes, an Event whose payload bytes are not the type it names,
a timestamp out of range, a NUL in an id), then one good record. Every consumer group must dead-letter each
bad record with its error on `<topic>.dlq` and go on: its committed offsets reach the end of the topic and
the good record's effect is there.
"""

from __future__ import annotations

import os
import time

import pytest
from adsmon.ads.v1 import ads_pb2, ads_pb2_grpc
from adsmon.connects.v1 import events_pb2 as ledger_events
from adsmon.events.v1.event_pb2 import DeadLetter
from adsmon.marketplace.v1 import jobs_pb2
from google.protobuf import any_pb2

from services.kit.clients import sync_channel
from services.kit.kafka import dlq_topic, encode_event, make_event, make_producer
from tests.conftest import unique
from tests.e2e.conftest import ServiceProcess, launch, secret_file  # noqa: F401 - fixtures used here
from tests.integration.kit.support import committed_offsets, end_offsets, read_topic, wait_for

pytestmark = pytest.mark.e2e

JOBS, LEDGER = "marketplace.jobs.v1", "connects.ledger.v1"


def hostile_records(topic: str) -> list[tuple[str, bytes]]:
    """(what, value) of records no consumer may apply, each a different way of being wrong."""
    foreign = ledger_events.LedgerTransactionRecorded() if topic == JOBS else jobs_pb2.JobPosted(job_id="j")
    wrong_type = make_event(foreign, "agg-1", "fuzz")
    lying = make_event(jobs_pb2.JobPosted(job_id="j"), "agg-2", "fuzz")
    lying.payload.CopyFrom(any_pb2.Any(type_url=lying.payload.type_url, value=b"\xff\xff\xff\xff"))
    ledger_lying = make_event(ledger_events.LedgerTransactionRecorded(), "agg-3", "fuzz")
    ledger_lying.payload.CopyFrom(any_pb2.Any(type_url=ledger_lying.payload.type_url, value=b"\x0a\xff\xff"))
    records = [
        ("text", b"this is not an event"),
        ("json", b'{"event_id": "e-1", "type": "JobPosted", "payload": {"job_id": "j"}}'),
        ("random bytes", os.urandom(64)),
        ("oversized", os.urandom(900_000)),
        ("another message type", DeadLetter(source_topic="x", error="not an envelope").SerializeToString()),
        ("a payload type this topic never carries", encode_event(wrong_type)),
        ("payload bytes that are not the type named", encode_event(lying if topic == JOBS else ledger_lying)),
    ]
    if topic == JOBS:
        bad_time = make_event(jobs_pb2.JobPosted(job_id=unique("job")), "agg-4", "fuzz")
        posted = jobs_pb2.JobPosted(job_id=unique("job"))
        posted.posted_at.seconds = 2**62
        bad_time.payload.Pack(posted)
        records.append(("a timestamp out of range", encode_event(bad_time)))
    return records


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = make_producer(bootstrap, client_id="fuzz-hostile", max_request_size=2_000_000)
    try:
        for future in [producer.send(topic, key=b"fuzz", value=v) for v in values]:
            future.get(timeout=30)
    finally:
        producer.close()


def dead_letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    letters = []
    for record in read_topic(bootstrap, dlq_topic(topic)):
        letter = DeadLetter()
        letter.ParseFromString(record.value)
        letters.append(letter)
    return letters


@pytest.fixture(scope="module")
def consuming(launch) -> dict[str, ServiceProcess]:  # noqa: F811 - the e2e fixture imported above
    prefix = unique("hostile") + "."
    space = {"ADSMON_KAFKA_TOPIC_PREFIX": prefix, "ADSMON_KAFKA_GROUP_PREFIX": prefix}
    connects = launch("connects", **space)
    ads = launch("ads", ADSMON_ADS_CONNECTS_TARGET=connects.target, ADSMON_ADS_PLACEBO_SHARE="0", **space)
    billing = launch("billing", ADSMON_BILLING_CONNECTS_TARGET=connects.target, **space)
    return {"connects": connects, "ads": ads, "billing": billing, "prefix": prefix}  # type: ignore[dict-item]


def wait_dead_lettered(bootstrap: str, topic: str, groups: list[str], count: int) -> list[DeadLetter]:
    def enough() -> bool:
        try:
            letters = dead_letters(bootstrap, topic)
        except AssertionError:
            return False
        return all(sum(1 for x in letters if x.consumer_group == g) >= count for g in groups)

    wait_for(enough, timeout=120, what=f"{count} dead letters per group on {dlq_topic(topic)}")
    return dead_letters(bootstrap, topic)


def wait_caught_up(bootstrap: str, group: str, topic: str) -> None:
    def caught_up() -> bool:
        committed = committed_offsets(bootstrap, group, topic)
        return all(committed.get(p) == end for p, end in end_offsets(bootstrap, topic).items() if end)

    wait_for(caught_up, timeout=60, what=f"{group} committed to the end of {topic}")


def test_bad_job_records_go_to_the_dlq_with_their_error_and_both_consumers_keep_going(
        consuming, kafka_bootstrap, auth_secret):
    prefix = consuming["prefix"]
    topic = prefix + JOBS
    records = hostile_records(JOBS)
    job_id = unique("job")
    good = make_event(jobs_pb2.JobPosted(job_id=job_id, client_id="c-1", category="dev"), job_id, "fuzz")
    produce(kafka_bootstrap, topic, [v for _, v in records] + [encode_event(good)])
    groups = [prefix + "ads-auctions", prefix + "connects-job-returns"]
    # connects' consumer ignores job events other than cancellations and removals: only undecodable ones
    # are its to dead-letter. ads reads every kind, so every bad record is dead-lettered by it.
    # A payload type the topic does not carry is skipped, not dead-lettered, by both: new event types are
    # added to a topic without breaking older consumers (AIP-180). Every other bad record is ads'.
    expected = [v for what, v in records if what != "a payload type this topic never carries"]
    letters = wait_dead_lettered(kafka_bootstrap, topic, groups[:1], len(expected))
    for group in groups:
        wait_caught_up(kafka_bootstrap, group, topic)
    ads_letters = [x for x in letters if x.consumer_group == groups[0]]
    assert all(x.error and x.source_topic == topic for x in ads_letters)
    assert [x.value for x in sorted(ads_letters, key=lambda x: x.source_offset)] == expected, \
        [x.error for x in ads_letters]
    connects_letters = [x for x in letters if x.consumer_group == groups[1]]
    assert len(connects_letters) >= 5, "text, JSON, random, oversized and foreign records are undecodable"
    with sync_channel(consuming["ads"].target, secret=auth_secret, caller="operator") as ch:
        auction = ads_pb2_grpc.AdsServiceStub(ch).GetAuction(ads_pb2.GetAuctionRequest(job_id=job_id), timeout=10)
    assert auction.auction.job_id == job_id, "the good record after the bad ones was applied"


def test_bad_ledger_records_go_to_the_dlq_with_their_error_and_the_books_keep_going(
        consuming, kafka_bootstrap):
    prefix = consuming["prefix"]
    topic = prefix + LEDGER
    records = hostile_records(LEDGER)
    produce(kafka_bootstrap, topic, [v for _, v in records])
    group = prefix + "billing-revenue"
    letters = wait_dead_lettered(kafka_bootstrap, topic, [group], len(records))
    wait_caught_up(kafka_bootstrap, group, topic)
    mine = sorted((x for x in letters if x.consumer_group == group), key=lambda x: x.source_offset)
    assert [x.value for x in mine] == [v for _, v in records], [x.error for x in mine]
    assert all(x.error for x in mine)
    time.sleep(0.5)
    assert consuming["billing"].proc is not None and consuming["billing"].proc.poll() is None
    assert consuming["billing"].serving()


def test_the_services_still_answer_after_the_hostile_records(consuming):
    for name in ("connects", "ads", "billing"):
        process = consuming[name]
        assert process.proc is not None and process.proc.poll() is None, process.log_tail()
        assert process.serving(), f"{name} stopped serving"
