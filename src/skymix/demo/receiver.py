"""A webhook receiver on loopback that checks signatures as a customer's would.

The demo points the recording's notifications at it: each POST is verified with the
``standardwebhooks`` package (the reference implementation of the specification skymix signs
by), not with skymix's own signing code, so a verified payload shows that any receiver holding
the secret would accept it. Verified payloads answer 204 and are kept; a bad signature answers
401 and is counted.
"""

from __future__ import annotations

import http.server
import logging
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import standardwebhooks

__all__ = ["VerifiedWebhook", "WebhookReceiver"]

log = logging.getLogger(__name__)

#: a notification is a few kB; anything far larger is not one
MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """A POST whose signature verified: its ``webhook-id`` and its JSON payload."""

    webhook_id: str
    payload: dict[str, Any]


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (a free port, its own thread) verifying Standard Webhooks
    signatures with ``secret`` (``whsec_`` + base64). A context manager: serving inside the
    block, shut down and joined on the way out."""

    def __init__(self, secret: str, path: str = "/hooks") -> None:
        self.path = path
        self.received: list[VerifiedWebhook] = []
        self.rejected = 0
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler(secret))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="skymix-webhook-receiver", daemon=True
        )

    def __repr__(self) -> str:
        return f"WebhookReceiver(url={self.url!r}, received={len(self.received)})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def _handler(self, secret: str) -> type[http.server.BaseHTTPRequestHandler]:
        verifier = standardwebhooks.Webhook(secret)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                if self.path != receiver.path or not 0 < length <= MAX_BODY:
                    self.send_response(404 if self.path != receiver.path else 400)
                    self.end_headers()
                    return
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = verifier.verify(body, headers)
                except standardwebhooks.webhooks.WebhookVerificationError as exc:
                    with receiver._lock:
                        receiver.rejected += 1
                    log.warning("webhook refused: %s", exc)
                    self.send_response(401)
                    self.end_headers()
                    return
                if not isinstance(payload, dict):  # signed, but not a notification
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.received.append(VerifiedWebhook(headers["webhook-id"], payload))
                log.info("webhook %s verified", headers["webhook-id"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("receiver: " + format, *args)

        return Handler

    def start(self) -> None:
        self._thread.start()
        log.info("webhook receiver listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
