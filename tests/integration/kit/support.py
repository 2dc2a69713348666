"""Helpers for the kit integration tests: test schema, waiting, reading topics and offsets."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition

from services.kit.consumer import PROCESSED
from services.kit.outbox import OUTBOX

balances = sa.Table(
    "balances", sa.MetaData(),
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
)


def create_tables(engine: sa.Engine) -> None:
    """The outbox, processed_events and the balances test table."""
    for table in (OUTBOX, PROCESSED, balances):
        table.create(engine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Consumed:
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
        return {tp.partition: off for tp, off in c.end_offsets(parts).items()}
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Consumed]:
    """Every record currently on `topic` (up to its end offsets), partition by partition in order."""
    ends = end_offsets(bootstrap, topic)
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        got: list[Consumed] = []
        deadline = time.monotonic() + timeout
        while len(got) < sum(ends.values()) and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                got.extend(Consumed(r.partition, r.offset, r.key, r.value) for r in records)
        assert len(got) == sum(ends.values()), f"read {len(got)} of {sum(ends.values())} from {topic}"
        return sorted(got, key=lambda r: (r.partition, r.offset))
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = sorted(c.partitions_for_topic(topic) or [])
        return {p: c.committed(TopicPartition(topic, p)) for p in parts}
    finally:
        c.close()
