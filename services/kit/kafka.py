"""Kafka plumbing every service shares: DLQ naming, client factories, the event envelope.

Topic names belong to the services that produce and consume them
(`services/<svc>/adapters/topics.py`); the kit only derives `<topic>.dlq`.

Factories only build clients; nothing connects at import time. Producers are
idempotent with acks=all so a retried send never duplicates or reorders a
partition; consumers never auto-commit (offsets are committed after the
database effect, see `services.kit.consumer`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from adsmon.events.v1.event_pb2 import Event
from google.protobuf import message as pb_message
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kerrors

from services.kit.config import KafkaSecurity

DEFAULT_PARTITIONS = 3
DLQ_SUFFIX = ".dlq"
MAX_ID_LENGTH = 128


def dlq_topic(topic: str) -> str:
    """The dead-letter topic beside `topic`."""
    return f"{topic}{DLQ_SUFFIX}"


def service_topics(produces: Iterable[str], consumes: Iterable[str],
                   partitions: int = DEFAULT_PARTITIONS) -> dict[str, int]:
    """{topic: partitions} a service needs: what it produces, what it consumes and a DLQ beside each consumed one."""
    names = [*produces, *(name for topic in consumes for name in (topic, dlq_topic(topic)))]
    return dict.fromkeys(names, partitions)


class UndecodableEvent(ValueError):
    """Bytes that are not a usable `Event`, or a payload of a type the reader does not know.

    Permanent: retrying cannot help, so an idempotent consumer dead-letters it at once.
    """


def _servers(bootstrap: str) -> list[str]:
    return [part.strip() for part in bootstrap.split(",") if part.strip()]


# Fast recovery of group consumers: kafka-python's 45 s session timeout kept a partition of a SIGKILLed
# consumer unassigned for ~40 s; 10 s with a 3 s heartbeat bounds that (the broker's
# group.min.session.timeout.ms is 6 s).
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 3_000
MAX_POLL_INTERVAL_MS = 120_000
CLOSE_TIMEOUT_MS = 5_000


class _ClientDefaults:
    """What every client of this process gets unless a call says otherwise (set once at startup)."""

    security: KafkaSecurity = KafkaSecurity()
    session_timeout_ms: int = SESSION_TIMEOUT_MS
    instance_id: str = ""


def configure_clients(security: KafkaSecurity, *, session_timeout_ms: int = SESSION_TIMEOUT_MS,
                      instance_id: str = "") -> None:
    """Apply a service's Kafka settings (ServiceConfig) to every client the factories build from now on."""
    _ClientDefaults.security = security
    _ClientDefaults.session_timeout_ms = session_timeout_ms
    _ClientDefaults.instance_id = instance_id


def _base(bootstrap: str, client_id: str, security: KafkaSecurity | None) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap_servers": _servers(bootstrap), "client_id": client_id}
    config.update((security or _ClientDefaults.security).client_kwargs())
    return config


def make_producer(bootstrap: str, *, client_id: str, security: KafkaSecurity | None = None,
                  **overrides: Any) -> KafkaProducer:
    """An idempotent, acks=all producer; connects (and may raise NoBrokersAvailable) on creation.

    Timeouts are shorter than kafka-python's defaults so an outage surfaces as an
    error within seconds instead of blocking a relay for minutes.
    """
    config = _base(bootstrap, client_id, security)
    config.update({
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_block_ms": 10_000,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 30_000,
        "bootstrap_timeout_ms": 5_000,
        "reconnect_backoff_max_ms": 5_000,
    })
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(bootstrap: str, *, group_id: str, client_id: str, security: KafkaSecurity | None = None,
                  instance_id: str | None = None, **overrides: Any) -> KafkaConsumer:
    """A group consumer with manual commits that starts a new group at the earliest offset.

    `instance_id` (default: the configured ADSMON_KAFKA_INSTANCE_ID) turns on static membership: a
    restarted consumer with the same id takes its partitions back without a rebalance.
    """
    config = _base(bootstrap, client_id, security)
    config.update({
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "allow_auto_create_topics": False,
        "max_poll_records": 200,
        "bootstrap_timeout_ms": 5_000,
        "reconnect_backoff_max_ms": 5_000,
        "session_timeout_ms": _ClientDefaults.session_timeout_ms,
        "heartbeat_interval_ms": min(HEARTBEAT_INTERVAL_MS, _ClientDefaults.session_timeout_ms // 3),
        "max_poll_interval_ms": MAX_POLL_INTERVAL_MS,
    })
    instance = _ClientDefaults.instance_id if instance_id is None else instance_id
    if instance:
        config["group_instance_id"] = instance
    config.update(overrides)
    return KafkaConsumer(**config)


def make_admin(bootstrap: str, *, client_id: str, security: KafkaSecurity | None = None,
               **overrides: Any) -> KafkaAdminClient:
    config = _base(bootstrap, client_id, security)
    config.update(overrides)
    return KafkaAdminClient(**config)


def ensure_topics(
    bootstrap: str, topics: Mapping[str, int], *, replication_factor: int = 1,
    client_id: str = "adsmon-admin", timeout_ms: int = 30_000,
) -> list[str]:
    """Create the missing topics ({name: partitions}); existing ones are left as they are.

    Returns the names created by this call. Waits until every topic has a leader.
    """
    admin = make_admin(bootstrap, client_id=client_id)
    try:
        request = {name: {"num_partitions": n, "replication_factor": replication_factor}
                   for name, n in topics.items()}
        result = admin.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
        created = []
        for entry in result["topics"]:
            error = kerrors.for_code(entry["error_code"])
            if error is kerrors.NoError:
                created.append(entry["name"])
            elif error is not kerrors.TopicAlreadyExistsError:
                raise error(f"cannot create topic {entry['name']}: {entry.get('error_message')}")
        admin.wait_for_topics(list(topics), timeout_ms=timeout_ms)
        return created
    finally:
        admin.close()


def make_event(
    type_msg: pb_message.Message, aggregate_id: str, producer: str, causation_id: str | None = None,
    event_id: str | None = None, occurred_at: datetime | None = None,
) -> Event:
    """Wrap a typed payload in the `Event` envelope; `type` is the payload's full proto name."""
    if not aggregate_id:
        raise ValueError("aggregate_id is required: it is the Kafka key that keeps per-key order")
    if len(aggregate_id) > MAX_ID_LENGTH:
        raise ValueError(f"aggregate_id longer than {MAX_ID_LENGTH} characters")
    event = Event(
        event_id=event_id or str(uuid.uuid4()),
        type=type_msg.DESCRIPTOR.full_name,
        producer=producer,
        aggregate_id=aggregate_id,
        causation_id=causation_id or "",
    )
    event.occurred_at.FromDatetime(occurred_at or datetime.now(UTC))
    event.payload.Pack(type_msg)
    return event


def encode_event(event: Event) -> bytes:
    return event.SerializeToString(deterministic=True)


def decode_event(data: bytes | None) -> Event:
    """Parse and sanity-check an envelope; raise UndecodableEvent if it is not one."""
    if not data:
        raise UndecodableEvent("empty record value")
    event = Event()
    try:
        event.ParseFromString(data)
    except pb_message.DecodeError as exc:
        raise UndecodableEvent(f"not an adsmon.events.v1.Event: {exc}") from None
    # Arbitrary bytes can parse as a proto made only of unknown fields: insist on the contract.
    if not event.event_id or len(event.event_id) > MAX_ID_LENGTH:
        raise UndecodableEvent("event_id is missing or too long")
    if not event.type or not event.HasField("payload"):
        raise UndecodableEvent(f"event {event.event_id} has no type or payload")
    return event


PayloadRegistry = Mapping[str, type[pb_message.Message]]


def payload_registry(*message_types: type[pb_message.Message]) -> dict[str, type[pb_message.Message]]:
    """{full proto name: class} for `decode_payload`."""
    return {cls.DESCRIPTOR.full_name: cls for cls in message_types}


def decode_payload(
    event: Event, registry: PayloadRegistry | Iterable[type[pb_message.Message]],
) -> pb_message.Message:
    """Unpack `event.payload` into the registered class for its type; UndecodableEvent otherwise."""
    if not isinstance(registry, Mapping):
        registry = payload_registry(*registry)
    type_name = event.payload.TypeName()
    cls = registry.get(type_name)
    if cls is None:
        raise UndecodableEvent(f"event {event.event_id}: unknown payload type {type_name!r}")
    message = cls()
    try:
        unpacked = event.payload.Unpack(message)
    except pb_message.DecodeError as exc:
        unpacked, type_name = False, f"{type_name} ({exc})"
    if not unpacked:
        raise UndecodableEvent(f"event {event.event_id}: payload is not a {type_name}")
    return message


__all__ = [
    "DEFAULT_PARTITIONS",
    "Event",
    "UndecodableEvent",
    "configure_clients",
    "decode_event",
    "decode_payload",
    "dlq_topic",
    "encode_event",
    "ensure_topics",
    "make_admin",
    "make_consumer",
    "make_event",
    "make_producer",
    "payload_registry",
    "service_topics",
]


def close_quietly(producer: KafkaProducer | None, what: str) -> None:
    """Close a producer on shutdown or after a failure; a failure to close is only worth a debug line."""
    if producer is None:
        return
    try:
        producer.close(timeout=1)
    except Exception:
        logging.getLogger(__name__).debug("closing the %s producer failed", what, exc_info=True)
