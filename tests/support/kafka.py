"""Kafka look-alikes for unit tests of consumers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Rec:
    """What services.kit.consumer.Record needs of a kafka-python ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
