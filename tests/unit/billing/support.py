"""Helpers for billing's service-layer tests."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.kit.kafka import decode_event
from services.kit.outbox import OUTBOX


def outbox_types(engine: Engine, account_id: str) -> list[str]:
    """Event types queued in the outbox for `account_id`, in order (short names)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(OUTBOX.c.payload).where(OUTBOX.c.key == account_id).order_by(OUTBOX.c.id))
        return [decode_event(bytes(r.payload)).type.rsplit(".", 1)[1] for r in rows]
