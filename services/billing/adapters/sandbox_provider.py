"""A sandbox payment provider that behaves like a real one, in-process or as its own small process.

Behind the `PaymentProvider` port (`services.billing.service_layer.payments`):

- payment intents created and confirmed in one call, idempotent on their key
  (the same key answers the first intent, whatever the card does now);
- test cards (the `payment_method` token, or the card number beside it):

  | token                        | number           | behaviour                                          |
  |------------------------------|------------------|----------------------------------------------------|
  | pm_card_visa                 | 4242424242424242 | captured at once                                   |
  | pm_card_async                | 4000002500003155 | PROCESSING; captured `capture_delay` later (webhook)|
  | pm_card_declined             | 4000000000000002 | DECLINED (card_declined)                           |
  | pm_card_insufficient_funds   | 4000000000009995 | DECLINED (insufficient_funds)                      |
  | pm_card_transient            | 4000000000000119 | first call per key fails (503), the retry succeeds |
  | pm_card_timeout              | 4000000000000341 | captured, but the answer is lost (timeout)         |
  | pm_card_dispute              | 4000000000000259 | captured, then disputed `dispute_delay` later      |

  any other token is declined with `invalid_payment_method`;
- webhook events (`payment_intent.processing|succeeded|payment_failed`,
  `charge.refunded`, `charge.dispute.created`) delivered late (a random delay),
  twice (every event is sent `copies` times) and therefore out of order; a
  handler that raises gets the event again later, as a real provider retries;
- refunds, disputes (`dispute(intent_id)`), and `emit` to inject any event (tests);
- its own records of Connects purchases (the books' `PaymentRecords` port): payments captured and money
  taken back (disputes, refunds), by wall-clock time, whatever billing believes.

As a process: `python -m services.billing.adapters.sandbox_provider --port 8099
--webhook-url http://127.0.0.1:8098/webhooks` serves the same core as JSON over
HTTP on loopback (POST /v1/payment_intents with an Idempotency-Key header,
GET /v1/payment_intents[/<id>], POST /v1/refunds, POST /v1/disputes,
GET /v1/records?start=<iso>&end=<iso> (the PaymentRecords), and
POST /v1/test/events to inject an event) and POSTs
webhook events to the URL; `HttpSandboxProvider` is billing's adapter for it.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.billing.domain.errors import PaymentProviderUnavailable
from services.billing.service_layer.payments import (
    EventHandler,
    EventType,
    IntentStatus,
    PaymentIntent,
    PaymentProvider,
    ProviderEvent,
)
from services.billing.service_layer.revenue_ports import PaymentRecords, ProviderPayment, ProviderReversal

log = logging.getLogger(__name__)

CARDS = {
    "pm_card_visa": "succeed", "4242424242424242": "succeed",
    "pm_card_async": "async", "4000002500003155": "async",
    "pm_card_declined": "card_declined", "4000000000000002": "card_declined",
    "pm_card_insufficient_funds": "insufficient_funds", "4000000000009995": "insufficient_funds",
    "pm_card_transient": "transient", "4000000000000119": "transient",
    "pm_card_timeout": "timeout", "4000000000000341": "timeout",
    "pm_card_dispute": "dispute", "4000000000000259": "dispute",
}


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@dataclass
class _Intent:
    intent: PaymentIntent
    key: str
    behaviour: str
    refunded: int = 0
    disputed: bool = False
    captures_at: float = 0.0  # async cards: when the capture happens (monotonic)
    charge_id: str = ""
    captured_at: datetime | None = None  # wall clock (async cards: when the capture will happen)
    reversals: list[tuple[str, int, datetime]] = field(default_factory=list)  # (DISPUTE|REFUND, cents, at)


PURCHASE_KEY_PREFIX = "billing:purchase:"  # Connects purchases' intents (membership fees have their own keys)


def _purchase_id(key: str) -> str:
    """The purchase of an intent's idempotency key `billing:purchase:<purchase_id>`; "" for other intents."""
    rest = key.removeprefix(PURCHASE_KEY_PREFIX)
    return rest if rest != key and rest and ":" not in rest else ""


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    event: ProviderEvent = field(compare=False)
    attempt: int = field(default=1, compare=False)


class SandboxCore:
    """The provider's state and behaviour (thread-safe). `deliver` sends one event to its subscriber."""

    def __init__(self, *, capture_delay: float = 0.3, dispute_delay: float = 0.5,
                 webhook_delay: tuple[float, float] = (0.02, 0.4), copies: int = 2,
                 seed: int | None = None) -> None:
        self.capture_delay = capture_delay
        self.dispute_delay = dispute_delay
        self.webhook_delay = webhook_delay
        self.copies = copies
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._by_key: dict[str, _Intent] = {}
        self._by_id: dict[str, _Intent] = {}
        self._refunds: dict[str, str] = {}
        self._transient_seen: set[str] = set()
        self._queue: list[_Delivery] = []
        self._seq = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._deliver: Callable[[ProviderEvent], object] | None = None
        self._thread: threading.Thread | None = None

    # -- API -------------------------------------------------------------------------------------

    def create_payment(self, *, idempotency_key: str, amount_cents: int, currency: str, payment_method: str,
                       metadata: Mapping[str, str]) -> tuple[PaymentIntent, bool]:
        """The intent for this key, and True if the answer is "lost" (a timeout after the charge)."""
        if amount_cents <= 0 or len(currency) != 3:
            raise ValueError("amount must be positive and currency an ISO code")
        behaviour = CARDS.get(payment_method, "invalid_payment_method")
        with self._lock:
            known = self._by_key.get(idempotency_key)
            if known is not None:
                return known.intent, False
            if behaviour == "transient" and idempotency_key not in self._transient_seen:
                self._transient_seen.add(idempotency_key)
                raise PaymentProviderUnavailable("sandbox: transient processing error (503)")
            intent_id = _id("pi")
            now = time.monotonic()
            if behaviour in ("succeed", "timeout", "dispute", "transient"):
                intent = PaymentIntent(intent_id, IntentStatus.SUCCEEDED, amount_cents, currency, _id("ch"),
                                       metadata=dict(metadata))
                self._schedule(EventType.SUCCEEDED, intent, now)
                if behaviour == "dispute":
                    self._schedule(EventType.DISPUTE_CREATED, intent, now + self.dispute_delay,
                                   {"dispute_id": _id("dp"), "amount_cents": str(amount_cents),
                                    "reason": "fraudulent"})
            elif behaviour == "async":
                intent = PaymentIntent(intent_id, IntentStatus.PROCESSING, amount_cents, currency,
                                       metadata=dict(metadata))
                charge_id = _id("ch")
                self._schedule(EventType.PROCESSING, intent, now)
                self._schedule(EventType.SUCCEEDED, replace(intent, status=IntentStatus.SUCCEEDED,
                                                            charge_id=charge_id), now + self.capture_delay)
            else:
                intent = PaymentIntent(intent_id, IntentStatus.DECLINED, amount_cents, currency,
                                       decline_code=behaviour, metadata=dict(metadata))
                self._schedule(EventType.FAILED, intent, now, {"decline_code": behaviour})
            record = _Intent(intent, idempotency_key, behaviour)
            wall = datetime.now(UTC)
            if intent.status is IntentStatus.PROCESSING:
                record.captures_at, record.charge_id = now + self.capture_delay, charge_id
                record.captured_at = wall + timedelta(seconds=self.capture_delay)
            elif intent.status is IntentStatus.SUCCEEDED:
                record.captured_at = wall
                if behaviour == "dispute":
                    record.disputed = True
                    record.reversals.append(("DISPUTE", amount_cents, wall + timedelta(seconds=self.dispute_delay)))
            self._by_key[idempotency_key] = record
            self._by_id[intent_id] = record
            return intent, behaviour == "timeout"

    def retrieve(self, intent_id: str) -> PaymentIntent:
        with self._lock:
            record = self._by_id.get(intent_id)
            if record is None:
                raise KeyError(intent_id)
            self._settle(record)
            return record.intent

    def find(self, idempotency_key: str) -> PaymentIntent | None:
        with self._lock:
            record = self._by_key.get(idempotency_key)
            if record is None:
                return None
            self._settle(record)
            return record.intent

    def refund(self, *, idempotency_key: str, intent_id: str, amount_cents: int) -> str:
        with self._lock:
            if idempotency_key in self._refunds:
                return self._refunds[idempotency_key]
            record = self._by_id[intent_id]
            self._settle(record)
            if record.intent.status is not IntentStatus.SUCCEEDED or record.refunded + amount_cents > \
                    record.intent.amount_cents:
                raise ValueError("nothing captured to refund")
            record.refunded += amount_cents
            record.reversals.append(("REFUND", amount_cents, datetime.now(UTC)))
            refund_id = _id("re")
            self._refunds[idempotency_key] = refund_id
            self._schedule(EventType.REFUNDED, record.intent, time.monotonic(),
                           {"refund_id": refund_id, "amount_cents": str(amount_cents)})
            return refund_id

    def dispute(self, intent_id: str, *, reason: str = "fraudulent") -> str:
        """Open a dispute on a captured payment (the bank's chargeback); its event follows."""
        with self._lock:
            record = self._by_id[intent_id]
            self._settle(record)
            dispute_id = _id("dp")
            record.disputed = True
            record.reversals.append(("DISPUTE", record.intent.amount_cents, datetime.now(UTC)))
            self._schedule(EventType.DISPUTE_CREATED, record.intent, time.monotonic(),
                           {"dispute_id": dispute_id, "amount_cents": str(record.intent.amount_cents),
                            "reason": reason})
            return dispute_id

    def emit(self, type_: str, intent_id: str, data: Mapping[str, str] | None = None, *,
             delay: float = 0.0) -> ProviderEvent:
        """Inject an event about an intent (e.g. a late `payment_failed` after success)."""
        with self._lock:
            return self._schedule(type_, self._by_id[intent_id].intent, time.monotonic() + delay, data or {},
                                  copies=1)

    def intents(self) -> list[PaymentIntent]:
        """Every intent (the provider's own records, for reconciliation and tests)."""
        with self._lock:
            for record in self._by_id.values():
                self._settle(record)
            return [r.intent for r in self._by_id.values()]

    def captured_payments(self, start: datetime, end: datetime) -> list[ProviderPayment]:
        """Connects purchases' payments captured in [start, end), in capture order."""
        with self._lock:
            out = []
            for record in self._by_id.values():
                self._settle(record)
                pid, at = _purchase_id(record.key), record.captured_at
                if pid and record.intent.status is IntentStatus.SUCCEEDED and at is not None and start <= at < end:
                    out.append(ProviderPayment(record.intent.charge_id, pid, record.intent.amount_cents, at))
            return sorted(out, key=lambda p: (p.captured_at, p.purchase_id))

    def reversals(self, start: datetime, end: datetime) -> list[ProviderReversal]:
        """Disputes and refunds of Connects purchases' payments in [start, end), in time order."""
        with self._lock:
            out = [ProviderReversal(r.intent.charge_id, pid, cents, kind, at)
                   for r in self._by_id.values() if (pid := _purchase_id(r.key))
                   for kind, cents, at in r.reversals if start <= at < end]
            return sorted(out, key=lambda x: (x.reversed_at, x.purchase_id))

    # -- webhook delivery ------------------------------------------------------------------------

    def start(self, deliver: Callable[[ProviderEvent], object]) -> None:
        with self._lock:
            self._deliver = deliver
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
                self._thread.start()
            self._wake.notify_all()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5)

    def take_queued(self) -> list[ProviderEvent]:
        """Remove and return every event not yet delivered, in delivery order (tests deliver them by hand)."""
        with self._lock:
            items = sorted(self._queue)
            self._queue.clear()
            return [d.event for d in items]

    def pending_deliveries(self) -> int:
        with self._lock:
            return len(self._queue)

    def _settle(self, record: _Intent) -> None:
        """An async intent whose capture time passed reads SUCCEEDED (its webhook may still be on its way)."""
        if record.intent.status is IntentStatus.PROCESSING and time.monotonic() >= record.captures_at:
            record.intent = replace(record.intent, status=IntentStatus.SUCCEEDED, charge_id=record.charge_id)

    def _schedule(self, type_: str, intent: PaymentIntent, at: float, data: Mapping[str, str] | None = None,
                  copies: int | None = None) -> ProviderEvent:
        body = {"status": intent.status.value, "amount_cents": str(intent.amount_cents),
                "currency": intent.currency, "charge_id": intent.charge_id, **dict(intent.metadata),
                **dict(data or {})}
        event = ProviderEvent(_id("evt"), type_, intent.intent_id, datetime.now(UTC), body)
        lo, hi = self.webhook_delay
        for _ in range(self.copies if copies is None else copies):
            heapq.heappush(self._queue, _Delivery(at + self._random.uniform(lo, hi), next(self._seq), event))
        self._wake.notify_all()
        return event

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (not self._queue or self._deliver is None
                                              or self._queue[0].due > time.monotonic()):
                    timeout = self._queue[0].due - time.monotonic() if self._queue else None
                    self._wake.wait(timeout if timeout is None or timeout > 0 else 0.001)
                if self._stopping:
                    return
                item = heapq.heappop(self._queue)
                deliver = self._deliver
            try:
                assert deliver is not None
                deliver(item.event)
            except Exception as exc:  # the receiver failed: redeliver later, as providers do
                log.info("sandbox webhook %s failed (%s); redelivering", item.event.event_id, exc)
                with self._lock:
                    heapq.heappush(self._queue, _Delivery(time.monotonic() + min(5.0, 0.1 * 2 ** item.attempt),
                                                          next(self._seq), item.event, item.attempt + 1))


class SandboxPaymentProvider(PaymentProvider, PaymentRecords):
    """The sandbox in-process behind the ports (webhooks delivered to the subscribed handler on a thread)."""

    def __init__(self, core: SandboxCore | None = None, *, timeout_delay: float = 0.05) -> None:
        self.core = core or SandboxCore()
        self.timeout_delay = timeout_delay

    def create_payment(self, *, idempotency_key: str, amount_cents: int, currency: str, payment_method: str,
                       metadata: Mapping[str, str]) -> PaymentIntent:
        intent, lost = self.core.create_payment(idempotency_key=idempotency_key, amount_cents=amount_cents,
                                                currency=currency, payment_method=payment_method,
                                                metadata=metadata)
        if lost:
            time.sleep(self.timeout_delay)
            raise PaymentProviderUnavailable("sandbox: timed out waiting for the provider")
        return intent

    def retrieve(self, intent_id: str) -> PaymentIntent:
        return self.core.retrieve(intent_id)

    def refund(self, *, idempotency_key: str, intent_id: str, amount_cents: int) -> str:
        return self.core.refund(idempotency_key=idempotency_key, intent_id=intent_id, amount_cents=amount_cents)

    def subscribe(self, handler: EventHandler) -> None:
        self.core.start(handler)

    def captured_payments(self, start: datetime, end: datetime) -> list[ProviderPayment]:
        return self.core.captured_payments(start, end)

    def reversals(self, start: datetime, end: datetime) -> list[ProviderReversal]:
        return self.core.reversals(start, end)

    def close(self) -> None:
        self.core.stop()


# -- as its own process: JSON over HTTP on loopback ------------------------------------------------

def _intent_json(intent: PaymentIntent) -> dict[str, Any]:
    body = asdict(intent)
    body["status"] = intent.status.value
    body["metadata"] = dict(intent.metadata)
    return body


def _intent_from(body: Mapping[str, Any]) -> PaymentIntent:
    return PaymentIntent(body["intent_id"], IntentStatus(body["status"]), int(body["amount_cents"]),
                         body["currency"], body.get("charge_id", ""), body.get("decline_code", ""),
                         dict(body.get("metadata", {})))


def records_json(core: SandboxCore, start: datetime, end: datetime) -> dict[str, Any]:
    """GET /v1/records: the PaymentRecords of [start, end) as JSON (times ISO 8601)."""
    return {"payments": [{**asdict(p), "captured_at": p.captured_at.isoformat()}
                         for p in core.captured_payments(start, end)],
            "reversals": [{**asdict(r), "reversed_at": r.reversed_at.isoformat()} for r in core.reversals(start, end)]}


def event_json(event: ProviderEvent) -> dict[str, Any]:
    return {"id": event.event_id, "type": event.type, "object_id": event.object_id,
            "created_at": event.created_at.isoformat(), "data": dict(event.data)}


def event_from(body: Mapping[str, Any]) -> ProviderEvent:
    return ProviderEvent(str(body["id"]), str(body["type"]), str(body["object_id"]),
                         datetime.fromisoformat(str(body["created_at"])),
                         {str(k): str(v) for k, v in dict(body.get("data", {})).items()})


def make_server(core: SandboxCore, port: int, *, timeout_delay: float = 6.0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_POST(self) -> None:
            try:
                body = self._body()
                if self.path == "/v1/payment_intents":
                    intent, lost = core.create_payment(
                        idempotency_key=self.headers.get("Idempotency-Key", ""), amount_cents=int(body["amount"]),
                        currency=str(body["currency"]), payment_method=str(body["payment_method"]),
                        metadata=dict(body.get("metadata", {})))
                    if lost:
                        time.sleep(timeout_delay)
                    self._reply(200, _intent_json(intent))
                elif self.path == "/v1/refunds":
                    refund_id = core.refund(idempotency_key=self.headers.get("Idempotency-Key", ""),
                                            intent_id=str(body["intent_id"]), amount_cents=int(body["amount"]))
                    self._reply(200, {"refund_id": refund_id})
                elif self.path == "/v1/disputes":
                    self._reply(200, {"dispute_id": core.dispute(str(body["intent_id"]))})
                elif self.path == "/v1/test/events":  # inject an event (e.g. a late payment_failed)
                    event = core.emit(str(body["type"]), str(body["intent_id"]), dict(body.get("data", {})),
                                      delay=float(body.get("delay", 0.0)))
                    self._reply(200, event_json(event))
                else:
                    self._reply(404, {"error": "not_found"})
            except PaymentProviderUnavailable:
                self._reply(503, {"error": "processing_error"})
            except (KeyError, ValueError) as exc:
                self._reply(400, {"error": "invalid_request", "detail": str(exc)})

        def do_GET(self) -> None:
            if self.path.startswith("/v1/payment_intents/"):
                try:
                    self._reply(200, _intent_json(core.retrieve(self.path.rsplit("/", 1)[1])))
                except KeyError:
                    self._reply(404, {"error": "not_found"})
            elif self.path == "/v1/payment_intents":
                self._reply(200, {"data": [_intent_json(i) for i in core.intents()]})
            elif self.path.startswith("/v1/records?"):
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                try:
                    start, end = (datetime.fromisoformat(query[k][0]) for k in ("start", "end"))
                except (KeyError, ValueError) as exc:
                    self._reply(400, {"error": "invalid_request", "detail": str(exc)})
                    return
                self._reply(200, records_json(core, start, end))
            else:
                self._reply(404, {"error": "not_found"})

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def _check_http(url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")


def post_webhook(url: str, timeout: float = 5.0) -> Callable[[ProviderEvent], None]:
    """A deliverer that POSTs each event as JSON to `url` (a non-2xx answer is a failed delivery)."""
    _check_http(url)

    def deliver(event: ProviderEvent) -> None:
        req = urllib.request.Request(url, data=json.dumps(event_json(event)).encode(), method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback URL from config
            if resp.status >= 300:
                raise RuntimeError(f"webhook answered {resp.status}")
    return deliver


class HttpSandboxProvider(PaymentProvider, PaymentRecords):
    """Billing's adapter for the sandbox run as a process (`python -m services.billing.adapters.sandbox_provider`)."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        _check_http(base_url)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None,
              key: str = "") -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,  # noqa: S310
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - configured URL
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise PaymentProviderUnavailable(f"sandbox answered {exc.code}") from None
            raise ValueError(f"sandbox refused the request: {exc.code} {exc.read()[:200]!r}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise PaymentProviderUnavailable(f"sandbox unreachable: {type(exc).__name__}") from None

    def create_payment(self, *, idempotency_key: str, amount_cents: int, currency: str, payment_method: str,
                       metadata: Mapping[str, str]) -> PaymentIntent:
        return _intent_from(self._call("POST", "/v1/payment_intents",
                                       {"amount": amount_cents, "currency": currency,
                                        "payment_method": payment_method, "metadata": dict(metadata)},
                                       key=idempotency_key))

    def retrieve(self, intent_id: str) -> PaymentIntent:
        return _intent_from(self._call("GET", f"/v1/payment_intents/{intent_id}"))

    def refund(self, *, idempotency_key: str, intent_id: str, amount_cents: int) -> str:
        return str(self._call("POST", "/v1/refunds", {"intent_id": intent_id, "amount": amount_cents},
                              key=idempotency_key)["refund_id"])

    def _records(self, start: datetime, end: datetime) -> dict[str, Any]:
        query = urllib.parse.urlencode({"start": start.isoformat(), "end": end.isoformat()})
        return self._call("GET", f"/v1/records?{query}")

    def captured_payments(self, start: datetime, end: datetime) -> list[ProviderPayment]:
        return [ProviderPayment(str(p["payment_reference"]), str(p["purchase_id"]), int(p["amount_cents"]),
                                datetime.fromisoformat(str(p["captured_at"])))
                for p in self._records(start, end)["payments"]]

    def reversals(self, start: datetime, end: datetime) -> list[ProviderReversal]:
        return [ProviderReversal(str(r["payment_reference"]), str(r["purchase_id"]), int(r["amount_cents"]),
                                 str(r["kind"]), datetime.fromisoformat(str(r["reversed_at"])))
                for r in self._records(start, end)["reversals"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The sandbox payment provider on loopback.")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--webhook-url", default="", help="where to POST webhook events (none: keep them)")
    parser.add_argument("--capture-delay", type=float, default=0.3)
    parser.add_argument("--copies", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    core = SandboxCore(capture_delay=args.capture_delay, copies=args.copies)
    if args.webhook_url:
        core.start(post_webhook(args.webhook_url))
    server = make_server(core, args.port)
    log.info("sandbox payment provider on 127.0.0.1:%d", server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        core.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
