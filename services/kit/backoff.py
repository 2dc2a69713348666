"""Exponential backoff for the kit's background workers (outbox relay, idempotent consumer)."""

from __future__ import annotations

# 2^16 times the initial delay is past any sensible maximum; capping the exponent keeps a long outage
# (thousands of failures) from overflowing the float.
MAX_EXPONENT = 16


def exponential(initial: float, maximum: float, exponent: int) -> float:
    """`initial * 2**exponent` seconds, at most `maximum`."""
    return min(maximum, initial * 2 ** min(exponent, MAX_EXPONENT))
