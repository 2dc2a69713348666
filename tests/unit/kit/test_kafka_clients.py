"""The Kafka client factories: security settings and fast-recovery group options reach kafka-python."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from services.kit import kafka
from services.kit.config import KafkaSecurity

SASL = KafkaSecurity("SASL_SSL", ca_file="/ca.pem", sasl_mechanism="SCRAM-SHA-256", sasl_username="billing",
                     sasl_password="pw")


class Captured:
    def __init__(self, **config: Any) -> None:
        self.config = config


@pytest.fixture(autouse=True)
def fake_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("KafkaConsumer", "KafkaProducer", "KafkaAdminClient"):
        monkeypatch.setattr(kafka, name, Captured)
    yield
    kafka.configure_clients(KafkaSecurity())


def test_the_configured_security_reaches_every_client_kind():
    kafka.configure_clients(SASL)
    for client in (kafka.make_producer("h:1", client_id="p"),
                   kafka.make_consumer("h:1", group_id="g", client_id="c"),
                   kafka.make_admin("h:1", client_id="a")):
        config = client.config  # type: ignore[attr-defined]
        assert config["security_protocol"] == "SASL_SSL"
        assert config["sasl_mechanism"] == "SCRAM-SHA-256"
        assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("billing", "pw")
        assert config["ssl_cafile"] == "/ca.pem"


def test_an_explicit_security_argument_wins_over_the_process_default():
    kafka.configure_clients(SASL)
    producer = kafka.make_producer("h:1", client_id="p", security=KafkaSecurity())
    assert "security_protocol" not in producer.config  # type: ignore[attr-defined]


def test_consumers_use_a_short_session_and_no_static_membership_by_default():
    config = kafka.make_consumer("h:1", group_id="g", client_id="c").config  # type: ignore[attr-defined]
    assert config["session_timeout_ms"] == 10_000
    assert config["heartbeat_interval_ms"] == 3_000
    assert config["max_poll_interval_ms"] == 120_000
    assert "group_instance_id" not in config


def test_a_configured_instance_id_turns_on_static_group_membership():
    kafka.configure_clients(KafkaSecurity(), session_timeout_ms=6_000, instance_id="connects-0")
    config = kafka.make_consumer("h:1", group_id="g", client_id="c").config  # type: ignore[attr-defined]
    assert config["group_instance_id"] == "connects-0"
    assert (config["session_timeout_ms"], config["heartbeat_interval_ms"]) == (6_000, 2_000)
