"""The walking skeleton: real processes, real PostgreSQL, real Kafka, talking gRPC.

connects `Credit` writes a ledger entry and an outbox row in one transaction,
the relay publishes it to `connects.ledger.v1`, and billing's revenue consumer
records it in the books exactly once: when the same request is retried, and when Kafka delivers the
same event again (at a new offset) or the same transaction under a new event id.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request

import grpc
import pytest
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2, connects_pb2_grpc, events_pb2
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from services.connects.adapters.topics import LEDGER as LEDGER_TOPIC
from services.kit.auth import mint_token
from services.kit.kafka import decode_event, decode_payload, encode_event, make_producer
from tests.conftest import ROOT, unique

pytestmark = pytest.mark.e2e


def billing_rows(billing, transaction_id: str) -> list[tuple]:
    engine = sa.create_engine(billing.env["ADSMON_BILLING_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT transaction_id, account_id, kind, amount, purchased_connects "
                "FROM revenue_transactions WHERE transaction_id = :t"), {"t": transaction_id}).all()
    finally:
        engine.dispose()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(interval)
    return predicate()


def credit(connects, auth_secret, request_id: str, account: str, amount: int):
    with grpc.insecure_channel(connects.target) as ch:
        stub = connects_pb2_grpc.ConnectsServiceStub(ch)
        return stub.Credit(
            connects_pb2.CreditRequest(request_id=request_id, account_id=account, amount=amount,
                                       source=connects_pb2.LOT_SOURCE_PURCHASE, reference=f"purchase:{request_id}"),
            metadata=(("authorization", f"Bearer {mint_token(auth_secret, 'billing')}"),), timeout=10)


def account_effect(billing, account: str) -> tuple[int, int]:
    """How many ledger transactions billing recorded for the account, and their sum."""
    engine = sa.create_engine(billing.env["ADSMON_BILLING_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            count, total = conn.execute(sa.text("SELECT count(*), coalesce(sum(amount), 0) FROM revenue_transactions "
                                                "WHERE account_id = :a"), {"a": account}).one()
            return count, total
    finally:
        engine.dispose()


def consumed(billing) -> dict[str, float]:
    """billing's consumer_processed_total on the ledger topic, by result."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{billing.metrics_port}/metrics", timeout=5).read().decode()
    topic = os.environ["ADSMON_KAFKA_TOPIC_PREFIX"] + LEDGER_TOPIC
    return {s.labels["result"]: s.value for family in text_string_to_metric_families(body)
            if family.name == "consumer_processed" for s in family.samples
            if s.name == "consumer_processed_total" and s.labels.get("topic") == topic}


def published_record(kafka_bootstrap: str, account: str, transaction_id: str):
    topic = os.environ["ADSMON_KAFKA_TOPIC_PREFIX"] + LEDGER_TOPIC
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        for record in consumer:
            if record.key == account.encode():
                msg = decode_payload(decode_event(record.value), {
                    events_pb2.LedgerTransactionRecorded.DESCRIPTOR.full_name: events_pb2.LedgerTransactionRecorded})
                if msg.transaction_id == transaction_id:
                    return record
    finally:
        consumer.close()
    raise AssertionError(f"{transaction_id} not found on {topic}")


def test_credit_reaches_billing_exactly_once_through_kafka(suite, auth_secret, kafka_bootstrap):
    account, request_id = unique("acct"), unique("req")
    first = credit(suite["connects"], auth_secret, request_id, account, 40)
    tx_id = first.transaction.transaction_id
    assert tx_id and first.transaction.amount == 40

    rows = wait_for(lambda: billing_rows(suite["billing"], tx_id))
    assert rows == [(tx_id, account, "CREDIT", 40, 40)]

    # A retry with the same request_id is the same transaction: no second ledger entry or event.
    again = credit(suite["connects"], auth_secret, request_id, account, 40)
    assert again.transaction.transaction_id == tx_id
    later = credit(suite["connects"], auth_secret, unique("req"), account, 10)
    wait_for(lambda: billing_rows(suite["billing"], later.transaction.transaction_id))
    assert billing_rows(suite["billing"], tx_id) == rows
    assert account_effect(suite["billing"], account) == (2, 50)

    # Kafka delivers the event again at a new offset, and the same transaction arrives under a new event id.
    before = consumed(suite["billing"])
    record = published_record(kafka_bootstrap, account, tx_id)
    renamed = decode_event(record.value)
    renamed.event_id = unique("event")
    topic = os.environ["ADSMON_KAFKA_TOPIC_PREFIX"] + LEDGER_TOPIC
    producer = make_producer(kafka_bootstrap, client_id="skeleton-test")
    try:
        producer.send(topic, key=record.key, value=record.value)
        producer.send(topic, key=record.key, value=encode_event(renamed))
        producer.flush(10)
    finally:
        producer.close()
    # A new credit on the same account (same key, same partition) is consumed after both copies.
    last = credit(suite["connects"], auth_secret, unique("req"), account, 5)
    wait_for(lambda: billing_rows(suite["billing"], last.transaction.transaction_id))

    def delta() -> dict[str, float]:
        now = consumed(suite["billing"])
        return {k: now.get(k, 0) - before.get(k, 0) for k in now if now.get(k, 0) != before.get(k, 0)}

    # The revenue consumer recognises both copies: the event id (processed_events) and the transaction id (its
    # books) are each keys of their own; only the new credit is applied.
    wait_for(lambda: delta() == {"duplicate": 2, "applied": 1}, timeout=10)
    assert delta() == {"duplicate": 2, "applied": 1}, "both copies skipped, nothing retried or dead-lettered"
    assert account_effect(suite["billing"], account) == (3, 55)
    assert billing_rows(suite["billing"], tx_id) == rows


def test_metrics_endpoint_shows_grpc_server_series_after_a_call(suite, auth_secret):
    credit(suite["connects"], auth_secret, unique("req"), unique("acct"), 5)
    body = urllib.request.urlopen(f"http://127.0.0.1:{suite['connects'].metrics_port}/metrics", timeout=5).read()
    text = body.decode()
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="Credit",' \
           'grpc_service="adsmon.connects.v1.ConnectsService",grpc_type="unary"}' in text
    assert "grpc_server_handling_seconds_bucket" in text
    assert "outbox_backlog" in text


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    subprocess.run([str(ROOT / "deploy/local/tools.sh"), "install", "grpcurl"], check=True,
                   capture_output=True)
    bindir = subprocess.run([str(ROOT / "deploy/local/tools.sh"), "path"], capture_output=True,
                            text=True, check=True).stdout.strip()
    return subprocess.run([f"{bindir}/grpcurl", *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("name", "service"), [
    ("connects", "adsmon.connects.v1.ConnectsService"),
    ("ads", "adsmon.ads.v1.AdsService"),
    ("billing", "adsmon.billing.v1.BillingService"),
])
def test_grpcurl_lists_service_and_health_and_health_is_serving(suite, name, service):
    listed = grpcurl("-plaintext", suite[name].target, "list")
    assert listed.returncode == 0, listed.stderr
    assert {service, "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = grpcurl("-plaintext", suite[name].target, "describe", service)
    assert described.returncode == 0 and "rpc " in described.stdout, described.stderr
    health = grpcurl("-plaintext", suite[name].target, "grpc.health.v1.Health/Check")
    assert health.returncode == 0, health.stderr
    assert '"status": "SERVING"' in health.stdout


def test_grpc_calls_without_credentials_are_refused(suite):
    listed = grpcurl("-plaintext", "-d", '{"account_id": "a"}', suite["connects"].target,
                     "adsmon.connects.v1.ConnectsService/GetBalance")
    assert listed.returncode != 0
    assert "Unauthenticated" in listed.stderr
