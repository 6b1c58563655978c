"""What the delivery tests share: a webhook receiver on 127.0.0.1 that verifies Standard Webhooks
signatures, a stopped recording with its mixed file, the event log as JSON, and the command line
run as a user runs it."""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skymix.deliver.chain import DeliveryOptions
from skymix.deliver.states import EVENT_LOG_NAME, Recording
from skymix.demo.receiver import WebhookReceiver

HOOK_SECRET = "whsec_" + base64.b64encode(b"skymix-chain-webhook-secret-0123").decode()
WRONG_S3_SECRET = "wrong-Secret-Key-9999ZZZZ"
#: The receivers are on loopback: the SSRF guard is lifted explicitly, as an operator would.
LOOPBACK = DeliveryOptions(allow_private=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Hooks:
    """What the receiver (the demo's, verifying with standardwebhooks) took: each verified
    payload, and each webhook-id header, in order."""

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver

    @property
    def url(self) -> str:
        return self.receiver.url

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [w.payload for w in self.receiver.received]

    @property
    def ids(self) -> list[str]:
        return [w.webhook_id for w in self.receiver.received]


@contextmanager
def webhook_receiver(secret: str = HOOK_SECRET) -> Iterator[Hooks]:
    """A receiver on 127.0.0.1 that keeps what verifies (204) and refuses what does not (401)."""
    with WebhookReceiver(secret) as receiver:
        yield Hooks(receiver)


@dataclass
class Inbox:
    """What an SMTP server (aiosmtpd on 127.0.0.1, this its handler) took: (recipients,
    message)."""

    mails: list[tuple[list[str], email.message.EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.mails.append((list(envelope.rcpt_tos), message))
        return "250 OK"


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
