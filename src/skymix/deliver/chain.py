"""The delivery chain: a mixed recording to the customer's bucket, its link, its announcements.

``deliver_recording`` runs the steps in order, each written to the recording's event log:
abort what an earlier attempt left of a multipart upload of the key (the ids the log recorded, and
those the store lists when the keys may list), upload (verified), presign the link, LINK (or
ERROR with the failure's code and message), then the notifications the settings enable (the
signed webhook, every try in the log; the e-mail when the operator configured SMTP and the
settings list addresses). A notification that fails is recorded, never raised: the recording is
delivered all the same.

When the upload to the application's bucket fails after its retries, the file goes to the
settings' backup bucket (LINK with a link there), else to the operator's backup folder
(``DeliveryOptions.backup_dir``; ERROR, the file safe for a later try); the notification says
where (``stored_in``). The local file is kept unless the settings ask to delete it, and then only
once an upload is verified and on record in the log.

``resume`` is that later try: it loads the event log of a recording's working folder and does
what is left (upload, link, the latest announcement) under the same recording id. A recording in
ERROR that now uploads goes to LINK, announced again with the next sequence number.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import DeliveryError, OptionsError, SkymixError
from ..outputs import PendingOutputs
from ..report import MixReport
from .email import EmailResult, message_for, send_email
from .s3 import (
    Link,
    S3Access,
    UploadResult,
    abort_stale_uploads,
    abort_uploads,
    presigned_link,
    upload,
)
from .settings import BucketSettings, RecordingSettings, SmtpSettings, StorageSettings
from .states import EVENT_LOG_NAME, ErrorReason, NotificationPayload, Recording, RecordingState
from .webhook import ALLOW_PRIVATE_ENV, WebhookAttempt, WebhookResult, send_webhook

__all__ = [
    "BACKUP_DIR_ENV",
    "DeliveryOptions",
    "DeliveryOutcome",
    "deliver_recording",
    "notification_channels",
    "resume",
    "s3_access",
    "storage_of",
]

log = logging.getLogger(__name__)

#: The content type of a recording by its file's suffix.
CONTENT_TYPES = {".mp4": "video/mp4", ".webm": "video/webm"}

#: The environment variable naming the operator's backup folder.
BACKUP_DIR_ENV = "SKYMIX_BACKUP_DIR"


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """How the operator runs deliveries; the application's settings say where and to whom.

    ``smtp``: the operator's SMTP server (none: no e-mail). ``endpoint_url``: an S3-compatible
    store's URL over the settings' own (for the primary bucket). ``allow_private``: notify URLs on
    private addresses (tests, demos on loopback). ``backup_dir``: the operator's backup folder,
    the last resort when every upload failed. ``webhook_max_tries`` and ``webhook_max_total_s``
    bound each webhook's retries.
    """

    smtp: SmtpSettings | None = None
    endpoint_url: str | None = None
    allow_private: bool = False
    backup_dir: Path | None = None
    webhook_max_tries: int = 5
    webhook_max_total_s: float = 60.0

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        endpoint_url: str | None = None,
        backup_dir: Path | None = None,
    ) -> DeliveryOptions:
        """The operator's options from the environment: SKYMIX_SMTP_URL and SKYMIX_SMTP_FROM,
        SKYMIX_ALLOW_PRIVATE_NOTIFY=1, SKYMIX_BACKUP_DIR (``backup_dir`` given wins).
        OptionsError naming the variable that is wrong."""
        env = os.environ if environ is None else environ
        allow = env.get(ALLOW_PRIVATE_ENV, "")
        if allow not in ("", "0", "1"):
            raise OptionsError("expected 1 (allow) or 0", field=ALLOW_PRIVATE_ENV)
        folder = backup_dir
        if folder is None and env.get(BACKUP_DIR_ENV):
            folder = Path(env[BACKUP_DIR_ENV])
        return cls(
            smtp=SmtpSettings.from_env(env),
            endpoint_url=endpoint_url,
            allow_private=allow == "1",
            backup_dir=folder,
        )


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


def s3_access(bucket: BucketSettings, *, endpoint_url: str | None = None) -> S3Access:
    """The S3 access a bucket's settings give: the destination's region, ``endpoint_url``
    (over the settings' own), and their keys (none: boto3's default credential chain)."""
    secret = bucket.secret_access_key
    return S3Access(
        region=bucket.destination.region,
        endpoint_url=endpoint_url or bucket.endpoint_url,
        access_key_id=bucket.access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(),
    )


def notification_channels(
    settings: RecordingSettings, smtp: SmtpSettings | None
) -> tuple[str, ...]:
    """The notification channels these settings use: "webhook" (enabled, with a URL and its
    secret), "email" (enabled, addresses, and the operator's SMTP server)."""
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
    options: DeliveryOptions = DeliveryOptions(),
) -> DeliveryOutcome:
    """Deliver the mixed ``file`` of ``recording`` (in STOP, or ERROR for another try) as
    ``settings`` say, then announce it. Returns what happened; raises only for a recording that
    cannot take the step (RecordingStateError) or an event log that cannot be written."""
    path = Path(file)
    if recording.mixed_file is None:
        recording.record_mixed(path)
    return _finish(path, settings, recording, report, options)


def resume(
    recording_dir: str | os.PathLike[str],
    settings: RecordingSettings,
    *,
    report: MixReport | None = None,
    options: DeliveryOptions = DeliveryOptions(),
) -> DeliveryOutcome:
    """Finish the delivery of the recording whose working folder is ``recording_dir`` (its
    event log, ``EVENT_LOG_NAME``, names the mixed file): upload and link if not done, and the
    latest announcement on the channels that have no outcome for it yet. Same recording id.
    ``report`` defaults to the folder's report.json when there is one. The file uploaded is the
    mixed file, or its copy in the operator's backup folder when the mixed file is gone."""
    folder = Path(recording_dir)
    recording = Recording.load(folder / EVENT_LOG_NAME)
    if report is None and (folder / "report.json").is_file():
        report = MixReport.from_json((folder / "report.json").read_bytes())
    pending = recording.pending(notification_channels(settings, options.smtp))
    if pending.link and recording.mixed_file is None:
        raise DeliveryError(f"recording {recording.id}: nothing was mixed, so nothing to deliver")
    if recording.state is RecordingState.START:
        recording.stop()
    log.info("recording %s: resuming (%s)", recording.id, pending)
    path = recording.mixed_file or folder
    copy = recording.backup_copy
    if pending.upload and not path.is_file() and copy is not None and copy.path.is_file():
        log.info("recording %s: the mixed file is gone; uploading its backup copy", recording.id)
        path = copy.path
    return _finish(path, settings, recording, report, options)


def _finish(
    path: Path,
    settings: RecordingSettings,
    recording: Recording,
    report: MixReport | None,
    options: DeliveryOptions,
) -> DeliveryOutcome:
    link: Link | None = None
    error: ErrorReason | None = None
    if recording.state is not RecordingState.LINK:
        try:
            link = _store(path, settings, recording, report, options)
        except SkymixError as exc:
            error = ErrorReason.from_exception(exc)
            log.warning("recording %s not delivered: %s", recording.id, error)
            if recording.state is RecordingState.ERROR:
                recording.append("retry_failed", error=error.to_json())
            else:
                recording.fail(error)
        else:
            recording.link(link.url, link.expires_at)
    webhook, mail = _notify(settings, recording, report, options)
    return DeliveryOutcome(recording, link, error, webhook, mail)


@dataclass(frozen=True, slots=True)
class _Target:
    """One bucket an upload can go to: which ("primary" or "backup"), where, how to reach it."""

    name: str
    bucket: str
    key: str
    access: S3Access


def _targets(
    storage: StorageSettings, recording: Recording, options: DeliveryOptions
) -> list[_Target]:
    """The application's bucket, then its backup bucket if the settings name one."""
    started = recording.started_at or recording.created_at
    fields: dict[str, str | datetime] = {
        "app_id": recording.app_id,
        "room": recording.room,
        "recording_id": recording.id,
        "started_at": started,
    }
    targets = []
    buckets: list[tuple[str, BucketSettings, str | None]] = [
        ("primary", storage, options.endpoint_url)
    ]
    if storage.backup is not None:
        buckets.append(("backup", storage.backup, None))
    for name, bucket, endpoint in buckets:
        destination = bucket.destination
        assert destination.bucket is not None  # an S3 destination always names its bucket
        targets.append(
            _Target(
                name,
                destination.bucket,
                storage.key_in(destination, **fields),
                s3_access(bucket, endpoint_url=endpoint),
            )
        )
    return targets


def _store(
    path: Path,
    settings: RecordingSettings,
    recording: Recording,
    report: MixReport | None,
    options: DeliveryOptions,
) -> Link:
    """Upload (unless the log holds a verified upload) and presign the link; the primary
    bucket first, then the backup bucket, then the operator's backup folder."""
    storage = storage_of(settings)
    targets = _targets(storage, recording, options)
    stored = recording.upload
    if stored is not None:
        target = targets[1] if stored.backup and len(targets) > 1 else targets[0]
        return presigned_link(
            stored.bucket, stored.key, storage.link_expiry_s, access=target.access
        )
    metadata = {"recording-id": recording.id, "room": recording.room}
    if report is not None:
        metadata["duration-s"] = f"{report.duration_s:.3f}"
        metadata["participants"] = str(len(report.participants))
    failures: list[DeliveryError] = []
    for target in targets:
        try:
            result = _upload_to(target, path, recording, metadata)
        except DeliveryError as exc:
            failures.append(exc)
            log.warning("recording %s: %s upload failed: %s", recording.id, target.name, exc)
            recording.append(
                "upload_failed",
                target=target.name,
                error=ErrorReason.from_exception(exc).to_json(),
            )
            continue
        recording.record_upload(
            bucket=result.bucket,
            key=result.key,
            size=result.size,
            sha256=result.sha256,
            backup=target.name == "backup",
        )
        if storage.delete_local_after_upload:
            _delete_local(path, recording)
        return presigned_link(
            result.bucket, result.key, storage.link_expiry_s, access=target.access
        )
    failed = failures[0]
    if len(failures) > 1:
        failed = DeliveryError(
            f"{failures[0]}; the backup bucket failed too: {failures[1]}",
            failures[1].last_exception,
        )
    if options.backup_dir is None:
        raise failed
    kept = _copy_to_folder(path, options.backup_dir, targets[0], recording)
    raise DeliveryError(
        f"{failed} (the file is kept in the operator's backup folder as {kept.name}, "
        "to be delivered later)",
        failed.last_exception,
    )


def _upload_to(
    target: _Target, path: Path, recording: Recording, metadata: dict[str, str]
) -> UploadResult:
    """One target's upload, after aborting what earlier attempts left of uploads of its key:
    the multipart uploads the log recorded, and those the store lists (when the keys may list:
    the least-privilege policy does not grant it, so a refusal is only logged)."""
    recorded = [
        m.upload_id
        for m in recording.multipart_starts
        if (m.bucket, m.key) == (target.bucket, target.key)
    ]
    aborted = 0
    if recorded:
        aborted += abort_uploads(target.bucket, target.key, recorded, access=target.access)
    try:
        aborted += abort_stale_uploads(target.bucket, target.key, access=target.access)
    except DeliveryError as exc:
        log.info("recording %s: unlisted multipart uploads not checked: %s", recording.id, exc)
    if aborted:
        recording.append("aborted_uploads", bucket=target.bucket, key=target.key, count=aborted)

    def started(upload_id: str) -> None:
        recording.record_multipart_start(target.bucket, target.key, upload_id)

    return upload(
        path,
        target.bucket,
        target.key,
        access=target.access,
        metadata=metadata,
        content_type=CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        on_multipart_start=started,
    )


def _delete_local(path: Path, recording: Recording) -> None:
    """Remove the local file whose upload the log now holds as verified; a failure to remove
    it is logged (the delivery stands)."""
    try:
        path.unlink()
    except OSError as exc:
        log.warning("recording %s: the local file was not deleted: %s", recording.id, exc)
        return
    recording.append("local_deleted", file=path.name)
    log.info("recording %s: %s deleted after its verified upload", recording.id, path.name)


def _copy_to_folder(path: Path, folder: Path, target: _Target, recording: Recording) -> Path:
    """Copy the file, complete or not at all, to ``folder``/bucket/key (the object it should
    have been) and record the copy; a DeliveryError when it cannot be written."""
    destination = folder / target.bucket / target.key
    digest = hashlib.sha256()
    size = 0
    try:
        with PendingOutputs() as pending:
            pending.make_folder(destination.parent, "the backup folder")
            temporary = pending.add(destination, "the backup copy")
            with path.open("rb") as source, open(temporary, "xb") as copy:
                while chunk := source.read(8 * 1024 * 1024):
                    digest.update(chunk)
                    copy.write(chunk)
                    size += len(chunk)
            pending.commit()
    except (OSError, SkymixError) as exc:
        raise DeliveryError(
            f"recording {recording.id}: no upload worked, and the copy to the backup folder "
            f"failed too: {exc}",
            exc,
        ) from exc
    recording.record_backup_copy(destination, size, digest.hexdigest())
    log.warning("recording %s: kept in the backup folder as %s", recording.id, destination)
    return destination


def _notify(
    settings: RecordingSettings,
    recording: Recording,
    report: MixReport | None,
    options: DeliveryOptions,
) -> tuple[WebhookResult | None, EmailResult | None]:
    """Send the latest announcement on each channel with no outcome for it yet; every outcome
    is written to the log, and nothing raises."""
    smtp = options.smtp
    due = recording.pending(notification_channels(settings, smtp)).notification
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
                max_tries=options.webhook_max_tries,
                max_total_s=options.webhook_max_total_s,
                allow_private=options.allow_private,
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
