"""google.protobuf.Timestamp from a caller or an event, checked before it becomes a datetime.

`Timestamp.ToDatetime` raises a bare ValueError for seconds outside years 1-9999 or nanos outside
[0, 1e9): a caller's mistake, so it is refused as INVALID_ARGUMENT naming the field (a consumer
dead-letters the event at once instead of retrying it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.kit.errors import InvalidArgument

# Timestamp's valid range (google/protobuf/timestamp.proto): 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799


def to_datetime(ts: Any, field: str) -> datetime:
    """`ts` (a Timestamp) as an aware UTC datetime; InvalidArgument INVALID_FIELD naming `field` if out of range."""
    if not MIN_SECONDS <= ts.seconds <= MAX_SECONDS or not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgument("INVALID_FIELD", f"{field} is not a valid timestamp", field=field)
    value: datetime = ts.ToDatetime(tzinfo=UTC)
    return value


def optional_datetime(message: Any, field: str) -> datetime | None:
    """The Timestamp `field` of `message` as a datetime (see `to_datetime`); None when unset."""
    return to_datetime(getattr(message, field), field) if message.HasField(field) else None
