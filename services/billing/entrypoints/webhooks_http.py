"""The payment provider's webhooks over HTTP (for a provider in its own process, e.g. the sandbox's).

POST /webhooks with the event as JSON. 200 once the event is recorded (and
applied or ignored); 500 when it could not be, so the provider delivers it
again. Loopback by default; a small stdlib server, started and stopped with
the service like any component.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.billing.adapters.sandbox_provider import event_from
from services.billing.service_layer.payments import ProviderEvent

log = logging.getLogger(__name__)


class WebhookServer:
    def __init__(self, handle: Callable[[ProviderEvent], object], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._handle = handle
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        handle = self._handle

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/webhooks":
                    self._reply(404)
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                    event = event_from(body)
                except (ValueError, KeyError, TypeError):
                    self._reply(400)
                    return
                try:
                    handle(event)
                except Exception:
                    log.warning("webhook event %s not applied; the provider will redeliver", event.event_id,
                                exc_info=True)
                    self._reply(500)
                    return
                self._reply(200)

            def _reply(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                log.debug(format, *args)

        return Handler

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="billing-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
