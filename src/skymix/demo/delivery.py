"""The demo's delivery: the sample recording through the whole chain, against real servers.

A SeaweedFS S3 store (``weed mini``) is started on 127.0.0.1 in a temporary folder, with keys
made for this run and the bucket created, and a webhook receiver that verifies signatures with
the ``standardwebhooks`` package. The recording (START, STOP: the sample capture is complete) is
then delivered by ``skymix.deliver.chain.deliver_recording`` exactly as a customer's would be:
upload with its checksum, presigned link, LINK, the signed notification. The link is fetched as
a customer would (a plain HTTP GET) and its SHA-256 compared with the local file's.

Both servers are stopped and the temporary folder (the store's data, the recording's event log)
removed on the way out, error or Ctrl-C alike. The generated keys and webhook secret live only
in this process and that folder: never printed, logged or reported.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from ..deliver.chain import DeliveryOptions, DeliveryOutcome, deliver_recording
from ..deliver.s3 import Link
from ..deliver.settings import RecordingSettings
from ..deliver.states import EVENT_LOG_NAME, Recording
from ..errors import DeliveryError
from ..report import MixReport
from .receiver import VerifiedWebhook, WebhookReceiver
from .seaweed import Identity, SeaweedS3

__all__ = ["DEMO_APP_ID", "DEMO_BUCKET", "DEMO_ROOM", "DemoDelivery", "deliver_demo"]

log = logging.getLogger(__name__)

DEMO_APP_ID = "skymix-demo"
DEMO_ROOM = "sample-room"
DEMO_BUCKET = "skymix-demo"
DEMO_REGION = "us-east-1"
#: the prefix under which the key template puts the recording
DEMO_PREFIX = "recordings"
LINK_EXPIRY_S = 3600
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class DemoDelivery:
    """What the demo's delivery showed: the chain's outcome, the link, the SHA-256 shared by the
    local file and what the link served, and the notification the receiver verified."""

    outcome: DeliveryOutcome
    link: Link
    sha256: str
    size: int
    webhook: VerifiedWebhook
    endpoint_url: str

    def summary(self) -> str:
        """The lines the demo prints: the link and its expiry, the check, the notification."""
        payload = self.webhook.payload
        expires = self.link.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return "\n".join(
            [
                f"delivered: recording {self.outcome.recording.id} is in "
                f"{self.outcome.recording.state}",
                f"  object: s3://{payload.get('bucket')}/{payload.get('key')} "
                f"on {self.endpoint_url}",
                f"  link (expires {expires}; served while the demo's store ran):",
                f"    {self.link.url}",
                f"  link fetched: {self.size} bytes, SHA-256 {self.sha256} = the local file's",
                f"  webhook {self.webhook.webhook_id}: signature verified, state "
                f"{payload.get('state')}, recording {payload.get('recording_id')}",
            ]
        )


def deliver_demo(
    file: str | Path,
    report: MixReport | None = None,
    *,
    weed: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> DemoDelivery:
    """Deliver the mixed ``file`` through the whole chain to a SeaweedFS store and a webhook
    receiver started here (and stopped before returning), fetch the link and check it.
    ``on_step`` hears each step as it begins. DeliveryError when the recording does not reach
    LINK (with its reason), the link does not serve the file, or no verified notification came."""
    file = Path(file)

    def step(message: str) -> None:
        log.info("%s", message)
        if on_step is not None:
            on_step(message)

    admin = Identity("SKYMIXDEMO" + secrets.token_hex(5).upper(), secrets.token_urlsafe(30))
    hook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with tempfile.TemporaryDirectory(prefix="skymix-demo-") as tmp:
        root = Path(tmp)
        step(f"starting SeaweedFS (S3) on 127.0.0.1 with bucket {DEMO_BUCKET}")
        with (
            SeaweedS3(root / "seaweed", DEMO_BUCKET, (admin,), DEMO_REGION, weed) as store,
            WebhookReceiver(hook_secret) as receiver,
        ):
            step(f"S3 store on {store.endpoint_url}; webhook receiver on {receiver.url}")
            settings = RecordingSettings.from_json(
                {
                    "app_id": DEMO_APP_ID,
                    "recording_enabled": True,
                    "storage": {
                        "arn": f"arn:aws:s3:{DEMO_REGION}::{DEMO_BUCKET}/{DEMO_PREFIX}",
                        "access_key_id": admin.access_key,
                        "secret_access_key": admin.secret_key,
                        "endpoint_url": store.endpoint_url,
                        "link_expiry_s": LINK_EXPIRY_S,
                    },
                    "notifications": {
                        "enabled": True,
                        "url": receiver.url,
                        "secret": hook_secret,
                        "emails": [],
                    },
                }
            )
            (root / "recording").mkdir()
            recording = Recording.create(
                root / "recording" / EVENT_LOG_NAME, DEMO_APP_ID, DEMO_ROOM
            )
            recording.start()
            recording.stop()
            step(f"delivering recording {recording.id}: upload, link, signed webhook")
            outcome = deliver_recording(
                file,
                settings,
                recording,
                report=report,
                options=DeliveryOptions(allow_private=True),
            )
            if not outcome.delivered or outcome.link is None:
                raise DeliveryError(f"the recording went to ERROR: {outcome.error}")
            step("fetching the link")
            size, fetched = _fetch(outcome.link.url)
            local = _sha256(file)
            if fetched != local:
                raise DeliveryError(
                    f"the link served {size} bytes whose SHA-256 is not the local file's"
                )
            webhook = next(
                (w for w in receiver.received if w.payload.get("recording_id") == recording.id),
                None,
            )
            if webhook is None:
                why = outcome.webhook.reason if outcome.webhook is not None else "none was sent"
                raise DeliveryError(f"no verified notification came to the receiver ({why})")
            step("stopping the servers")
            return DemoDelivery(outcome, outcome.link, local, size, webhook, store.endpoint_url)


def _fetch(url: str) -> tuple[int, str]:
    """GET the link: its size and SHA-256 (hex)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"fetching the link failed: {exc}", exc) from exc
    return size, digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
