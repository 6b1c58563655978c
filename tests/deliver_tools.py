"""What the delivery tests share: a webhook receiver on 127.0.0.1 that verifies Standard Webhooks
signatures, a stopped recording with its mixed file, the event log as JSON, and the command line
run as a user runs it."""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import standardwebhooks

from skymix.deliver.chain import DeliveryOptions
from skymix.deliver.states import EVENT_LOG_NAME, Recording

HOOK_SECRET = "whsec_" + base64.b64encode(b"skymix-chain-webhook-secret-0123").decode()
WRONG_S3_SECRET = "wrong-Secret-Key-9999ZZZZ"
#: The receivers are on loopback: the SSRF guard is lifted explicitly, as an operator would.
LOOPBACK = DeliveryOptions(allow_private=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Hooks:
    """What the receiver took: each verified payload, and each webhook-id header."""

    payloads: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"


@contextmanager
def webhook_receiver(secret: str = HOOK_SECRET) -> Iterator[Hooks]:
    """A receiver that keeps what verifies (204) and refuses what does not (401)."""
    state = Hooks()
    verifier = standardwebhooks.Webhook(secret)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                state.payloads.append(verifier.verify(body, headers))
                state.ids.append(headers["webhook-id"])
                self.send_response(204)
            except standardwebhooks.webhooks.WebhookVerificationError:
                self.send_response(401)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def stopped_recording(folder: Path, mp4: bytes, room: str = "room 7") -> tuple[Recording, Path]:
    """A recording of app "acme" in STOP, its log and mixed file (``mp4``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    recording = Recording.create(folder / EVENT_LOG_NAME, "acme", room)
    recording.start()
    recording.stop()
    file = folder / "recording.mp4"
    file.write_bytes(mp4)
    return recording, file


def events(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / EVENT_LOG_NAME).read_text().splitlines()
    return [json.loads(line) for line in lines]


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m skymix ARGS`` without the caller's AWS_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "skymix", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
