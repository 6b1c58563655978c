"""The delivery chain: a mixed recording to the customer's bucket, its link, its announcements.

``deliver_recording`` runs the steps in order, each written to the recording's event log: abort
what an earlier attempt left of a multipart upload of the key, upload (verified), presign the
link, LINK (or ERROR with the failure's code and message), then the notifications the settings
enable (the signed webhook, every try in the log; the e-mail when the operator configured SMTP and
the settings list addresses). A notification that fails is recorded, never raised: the recording
is delivered all the same. The local file is never touched, so a failed upload leaves it for a
later try.

``resume`` is that later try: it loads the event log of a recording's working folder and does
what is left (upload, link, the latest announcement) under the same recording id. A recording in
ERROR that now uploads goes to LINK, announced again with the next sequence number.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeliveryError, SkymixError
from ..report import MixReport
from .email import EmailResult, message_for, send_email
from .s3 import Link, S3Access, abort_stale_uploads, presigned_link, upload
from .settings import RecordingSettings, SmtpSettings, StorageSettings
from .states import EVENT_LOG_NAME, ErrorReason, NotificationPayload, Recording, RecordingState
from .webhook import WebhookAttempt, WebhookResult, send_webhook

__all__ = [
    "DeliveryOutcome",
    "deliver_recording",
    "resume",
    "s3_access",
    "storage_of",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What a delivery did: the recording (its state LINK or ERROR), the link when one was
    made, the error when the upload or link failed, and each notification's result (None when
    that channel was not used this time)."""

    recording: Recording
    link: Link | None
    error: ErrorReason | None
    webhook: WebhookResult | None
    email: EmailResult | None

    @property
    def delivered(self) -> bool:
        """True when the recording is in LINK."""
        return self.recording.state is RecordingState.LINK


def storage_of(settings: RecordingSettings) -> StorageSettings:
    """The settings' storage; DeliveryError when they name none."""
    if settings.storage is None:
        raise DeliveryError(f"the settings of application {settings.app_id} name no storage")
    return settings.storage


def s3_access(storage: StorageSettings, *, endpoint_url: str | None = None) -> S3Access:
    """The S3 access the storage settings give: the destination's region, ``endpoint_url``
    (over the settings' own), and their keys (none: boto3's default credential chain)."""
    secret = storage.secret_access_key
    return S3Access(
        region=storage.destination.region,
        endpoint_url=endpoint_url or storage.endpoint_url,
        access_key_id=storage.access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(),
    )


def _channels(settings: RecordingSettings, smtp: SmtpSettings | None) -> tuple[str, ...]:
    """The notification channels these settings use."""
    notify = settings.notifications
    if not notify.enabled:
        return ()
    channels = []
    if notify.url is not None and notify.secret is not None:
        channels.append("webhook")
    if smtp is not None and notify.emails:
        channels.append("email")
    return tuple(channels)


def deliver_recording(
    file: str | os.PathLike[str],
    settings: RecordingSettings,
    recording: Recording,
    *,
    report: MixReport | None = None,
    smtp: SmtpSettings | None = None,
    endpoint_url: str | None = None,
    allow_private: bool = False,
    webhook_max_tries: int = 5,
    webhook_max_total_s: float = 60.0,
) -> DeliveryOutcome:
    """Deliver the mixed ``file`` of ``recording`` (in STOP, or ERROR for another try) as
    ``settings`` say, then announce it. Returns what happened; raises only for a recording that
    cannot take the step (RecordingStateError) or an event log that cannot be written."""
    path = Path(file)
    if recording.mixed_file is None:
        recording.record_mixed(path)
    return _finish(
        path,
        settings,
        recording,
        report=report,
        smtp=smtp,
        endpoint_url=endpoint_url,
        allow_private=allow_private,
        webhook_max_tries=webhook_max_tries,
        webhook_max_total_s=webhook_max_total_s,
    )


def resume(
    recording_dir: str | os.PathLike[str],
    settings: RecordingSettings,
    *,
    report: MixReport | None = None,
    smtp: SmtpSettings | None = None,
    endpoint_url: str | None = None,
    allow_private: bool = False,
    webhook_max_tries: int = 5,
    webhook_max_total_s: float = 60.0,
) -> DeliveryOutcome:
    """Finish the delivery of the recording whose working folder is ``recording_dir`` (its
    event log, ``EVENT_LOG_NAME``, names the mixed file): upload and link if not done, and the
    latest announcement on the channels that have no outcome for it yet. Same recording id.
    ``report`` defaults to the folder's report.json when there is one."""
    folder = Path(recording_dir)
    recording = Recording.load(folder / EVENT_LOG_NAME)
    if report is None and (folder / "report.json").is_file():
        report = MixReport.from_json((folder / "report.json").read_bytes())
    pending = recording.pending(_channels(settings, smtp))
    if pending.link and recording.mixed_file is None:
        raise DeliveryError(f"recording {recording.id}: nothing was mixed, so nothing to deliver")
    if recording.state is RecordingState.START:
        recording.stop()
    log.info("recording %s: resuming (%s)", recording.id, pending)
    return _finish(
        recording.mixed_file or folder,
        settings,
        recording,
        report=report,
        smtp=smtp,
        endpoint_url=endpoint_url,
        allow_private=allow_private,
        webhook_max_tries=webhook_max_tries,
        webhook_max_total_s=webhook_max_total_s,
    )


def _finish(
    path: Path,
    settings: RecordingSettings,
    recording: Recording,
    *,
    report: MixReport | None,
    smtp: SmtpSettings | None,
    endpoint_url: str | None,
    allow_private: bool,
    webhook_max_tries: int,
    webhook_max_total_s: float,
) -> DeliveryOutcome:
    link: Link | None = None
    error: ErrorReason | None = None
    if recording.state is not RecordingState.LINK:
        try:
            link = _store(path, settings, recording, report, endpoint_url)
        except SkymixError as exc:
            error = ErrorReason.from_exception(exc)
            log.warning("recording %s not delivered: %s", recording.id, error)
            if recording.state is RecordingState.ERROR:
                recording.append("retry_failed", error=error.to_json())
            else:
                recording.fail(error)
        else:
            recording.link(link.url, link.expires_at)
    webhook, mail = _notify(
        settings,
        recording,
        report,
        smtp,
        allow_private=allow_private,
        max_tries=webhook_max_tries,
        max_total_s=webhook_max_total_s,
    )
    return DeliveryOutcome(recording, link, error, webhook, mail)


def _store(
    path: Path,
    settings: RecordingSettings,
    recording: Recording,
    report: MixReport | None,
    endpoint_url: str | None,
) -> Link:
    """Upload (unless the log holds a verified upload) and presign the link."""
    storage = storage_of(settings)
    access = s3_access(storage, endpoint_url=endpoint_url)
    stored = recording.upload
    if stored is None:
        bucket = storage.destination.bucket
        assert bucket is not None  # an S3 destination always names its bucket
        started = recording.started_at or recording.created_at
        key = storage.object_key(
            app_id=recording.app_id,
            room=recording.room,
            recording_id=recording.id,
            started_at=started,
        )
        try:
            aborted = abort_stale_uploads(bucket, key, access=access)
        except DeliveryError as exc:
            log.warning("recording %s: stale uploads not checked: %s", recording.id, exc)
        else:
            if aborted:
                recording.append("aborted_uploads", bucket=bucket, key=key, count=aborted)
        metadata = {"recording-id": recording.id, "room": recording.room}
        if report is not None:
            metadata["duration-s"] = f"{report.duration_s:.3f}"
            metadata["participants"] = str(len(report.participants))
        result = upload(path, bucket, key, access=access, metadata=metadata)
        recording.record_upload(
            bucket=result.bucket, key=result.key, size=result.size, sha256=result.sha256
        )
        bucket, key = result.bucket, result.key
    else:
        bucket, key = stored.bucket, stored.key
    return presigned_link(bucket, key, storage.link_expiry_s, access=access)


def _notify(
    settings: RecordingSettings,
    recording: Recording,
    report: MixReport | None,
    smtp: SmtpSettings | None,
    *,
    allow_private: bool,
    max_tries: int,
    max_total_s: float,
) -> tuple[WebhookResult | None, EmailResult | None]:
    """Send the latest announcement on each channel with no outcome for it yet; every outcome
    is written to the log, and nothing raises."""
    due = recording.pending(_channels(settings, smtp)).notification
    if due is None:
        return None, None
    try:
        payload = NotificationPayload.build(recording, report).to_json()
    except SkymixError as exc:
        log.warning("recording %s: no announcement: %s", recording.id, exc)
        return None, None
    notify = settings.notifications
    webhook: WebhookResult | None = None
    mail: EmailResult | None = None
    if "webhook" in due.channels and notify.url is not None and notify.secret is not None:

        def heard(attempt: WebhookAttempt) -> None:
            recording.append(
                "webhook_attempt",
                notification=due.sequence,
                webhook_id=attempt.webhook_id,
                number=attempt.number,
                outcome=attempt.outcome,
                status=attempt.status,
                reason=attempt.reason,
                address=attempt.address,
                elapsed_s=round(attempt.elapsed_s, 3),
            )

        try:
            webhook = send_webhook(
                notify.url,
                notify.secret.get_secret_value(),
                payload,
                webhook_id=f"msg_{recording.id}_{due.sequence}",
                max_tries=max_tries,
                max_total_s=max_total_s,
                allow_private=allow_private,
                on_attempt=heard,
            )
            outcome, reason = (
                ("delivered", None) if webhook.delivered else ("failed", webhook.reason)
            )
        except Exception as exc:  # noqa: BLE001 - a lost webhook must not lose the recording
            log.exception("recording %s: the webhook could not be sent", recording.id)
            outcome, reason = "failed", f"unexpected {type(exc).__name__}"
        recording.record_notification(due.sequence, "webhook", outcome, reason)
    if "email" in due.channels and smtp is not None:
        try:
            parts = message_for(payload)
            mail = send_email(
                smtp.target, smtp.sender, notify.emails, parts.subject, parts.text, parts.html
            )
            outcome, reason = ("delivered", None) if mail.sent else ("failed", mail.reason)
        except Exception as exc:  # noqa: BLE001 - a lost e-mail must not lose the recording
            log.exception("recording %s: the e-mail could not be sent", recording.id)
            outcome, reason = "failed", f"unexpected {type(exc).__name__}"
        recording.record_notification(due.sequence, "email", outcome, reason)
    return webhook, mail
