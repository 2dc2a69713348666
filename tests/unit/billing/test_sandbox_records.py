"""The sandbox's own records (the books' PaymentRecords port): what it captured and took back, by wall time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from services.billing.adapters.sandbox_provider import (
    HttpSandboxProvider,
    SandboxCore,
    SandboxPaymentProvider,
    make_server,
)
from tests.conftest import unique

DAY = timedelta(days=1)


def pay(core: SandboxCore, key: str, cents: int, card: str = "pm_card_visa") -> str:
    intent, _ = core.create_payment(idempotency_key=key, amount_cents=cents, currency="USD", payment_method=card,
                                    metadata={})
    return intent.intent_id


def test_captured_purchase_payments_are_listed_with_their_purchase_and_membership_fees_are_not():
    core = SandboxCore(capture_delay=0.0, seed=1)
    pid = unique("p")
    pay(core, f"billing:purchase:{pid}", 600)
    pay(core, f"billing:membership:{unique('m')}:1", 1999)
    pay(core, f"billing:purchase:{unique('p')}", 300, card="pm_card_declined")
    now = datetime.now(UTC)
    [payment] = SandboxPaymentProvider(core).captured_payments(now - DAY, now + DAY)
    assert (payment.purchase_id, payment.amount_cents) == (pid, 600)
    assert payment.payment_reference.startswith("ch_") and now - DAY < payment.captured_at <= now
    assert core.captured_payments(now + DAY, now + 2 * DAY) == []


def test_an_async_payment_is_listed_only_once_its_capture_time_has_passed():
    core = SandboxCore(capture_delay=3600.0, seed=1)
    pay(core, f"billing:purchase:{unique('p')}", 600, card="pm_card_async")
    now = datetime.now(UTC)
    assert core.captured_payments(now - DAY, now + 2 * DAY) == []


def test_refunds_and_disputes_are_reversals_of_the_purchase_payment():
    core = SandboxCore(capture_delay=0.0, dispute_delay=0.0, seed=1)
    refunded, disputed, carded = unique("p"), unique("p"), unique("p")
    intent = pay(core, f"billing:purchase:{refunded}", 600)
    core.refund(idempotency_key=f"billing:purchase:{refunded}:refund", intent_id=intent, amount_cents=600)
    core.dispute(pay(core, f"billing:purchase:{disputed}", 300))
    pay(core, f"billing:purchase:{carded}", 150, card="pm_card_dispute")
    now = datetime.now(UTC)
    got = sorted((r.purchase_id, r.kind, r.amount_cents) for r in core.reversals(now - DAY, now + DAY))
    assert got == sorted([(refunded, "REFUND", 600), (disputed, "DISPUTE", 300), (carded, "DISPUTE", 150)])


def test_the_sandbox_process_serves_the_same_records_over_http():
    core = SandboxCore(capture_delay=0.0, dispute_delay=0.0, seed=1)
    pid = unique("p")
    core.dispute(pay(core, f"billing:purchase:{pid}", 600))
    server = make_server(core, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = HttpSandboxProvider(f"http://127.0.0.1:{server.server_address[1]}")
        now = datetime.now(UTC)
        assert client.captured_payments(now - DAY, now + DAY) == core.captured_payments(now - DAY, now + DAY)
        assert [(r.purchase_id, r.kind) for r in client.reversals(now - DAY, now + DAY)] == [(pid, "DISPUTE")]
        assert client.reversals(now + DAY, now + 2 * DAY) == []
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
