"""The notification outbox: a notification that failed its tries inside the job is not lost.

The job writes one row per channel of its announcement (``OutboxItem``: the recording, the
announcement's sequence number, the channel, the webhook-id the job used, the attempts the job
made): those it delivered are kept as delivered (for the metrics); those that failed the
service's ``Outbox`` thread sends again on a schedule, across restarts, with the same webhook-id
every time, until it is delivered or given up. The schedule (``SCHEDULE_S``): the first try
1 min after the job's failure, the next ones 5 min, 30 min, 2 h and 6 h after the previous;
after the fifth, ``failed``. ``SKYMIX_OUTBOX_SCHEDULE`` (seconds, comma-separated) replaces it.
The ERROR of a job that failed before its delivery chain ran (a capture that cannot be mixed)
is sent from the outbox too, at once. An announcement superseded by a newer one of the same
recording is given up (its receiver sees the gap in the sequence numbers).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from ..deliver.email import message_for, send_email
from ..deliver.states import EVENT_LOG_NAME, NotificationPayload, Recording
from ..deliver.webhook import send_webhook
from ..errors import OptionsError
from ..report import MixReport
from .models import OutboxItem, RecordingRow, utcnow
from .state import ServiceState

__all__ = ["SCHEDULE_ENV", "SCHEDULE_S", "Outbox", "enqueue_failed", "enqueue_unsent", "schedule"]

log = logging.getLogger(__name__)

#: Seconds from one try to the next: the nth retry waits SCHEDULE_S[n]; after the last, failed.
SCHEDULE_S = (60.0, 300.0, 1800.0, 7200.0, 21600.0)
SCHEDULE_ENV = "SKYMIX_OUTBOX_SCHEDULE"
#: How often the outbox looks for items due.
POLL_S = 1.0
#: While an item is being sent it is not due again for this long (another service's outbox
#: leaves it alone).
CLAIM_S = 120.0


def schedule() -> tuple[float, ...]:
    """The retry schedule: SKYMIX_OUTBOX_SCHEDULE's, else SCHEDULE_S."""
    text = os.environ.get(SCHEDULE_ENV, "")
    if not text:
        return SCHEDULE_S
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise OptionsError("expected seconds, comma-separated", field=SCHEDULE_ENV) from None
    if not values or min(values) < 0:
        raise OptionsError("expected seconds, comma-separated", field=SCHEDULE_ENV)
    return values


def enqueue_failed(state: ServiceState, recording: Recording) -> int:
    """Outbox rows for the channels of the recording's latest announcement: those that failed
    in the job, to be retried after the schedule's first wait, and those it delivered, kept as
    delivered (the metrics count every notification and its attempts); each with the job's
    attempts on it (one row per channel, made once). Returns how many are to be retried."""
    sequence = recording.notification_sequence
    if not sequence:
        return 0
    outcomes: dict[str, set[object]] = {}
    tries: dict[str, int] = {}
    for e in _events(recording):
        if e.get("notification") != sequence:
            continue
        if e.get("event") == "notification":
            channel = str(e["channel"])
            outcomes.setdefault(channel, set()).add(e.get("outcome"))
            if channel == "email":
                tries["email"] = tries.get("email", 0) + 1
        elif e.get("event") == "webhook_attempt":
            tries["webhook"] = tries.get("webhook", 0) + 1
    failed = [c for c, seen in outcomes.items() if "failed" in seen and "delivered" not in seen]
    delivered = [c for c, seen in outcomes.items() if "delivered" in seen]
    retries = schedule()
    _add(state, recording, delivered, 0.0, tries, status="delivered")
    return _add(state, recording, failed, retries[0] if retries else 0.0, tries)


def enqueue_unsent(state: ServiceState, recording: Recording, channels: tuple[str, ...]) -> int:
    """Outbox rows, due now, for the channels (of ``channels``) on which the recording's latest
    announcement has no outcome: the ERROR of a job that failed before its delivery chain ran."""
    due = recording.pending(channels).notification
    return 0 if due is None else _add(state, recording, list(due.channels), 0.0)


def _add(
    state: ServiceState,
    recording: Recording,
    channels: list[str],
    delay_s: float,
    job_attempts: dict[str, int] | None = None,
    *,
    status: str = "pending",
) -> int:
    sequence = recording.notification_sequence
    added = 0
    for channel in channels:
        with state.db.session() as session:
            exists = session.scalar(
                select(OutboxItem.id).where(
                    OutboxItem.recording_id == recording.id,
                    OutboxItem.notification == sequence,
                    OutboxItem.channel == channel,
                )
            )
            if exists is not None:
                continue
            session.add(
                OutboxItem(
                    recording_id=recording.id,
                    notification=sequence,
                    channel=channel,
                    webhook_id=f"msg_{recording.id}_{sequence}",
                    status=status,
                    attempts=0,
                    job_attempts=(job_attempts or {}).get(channel, 0),
                    next_attempt_at=utcnow() + timedelta(seconds=delay_s),
                )
            )
        added += 1
        log.info(
            "recording %s: notification %d by %s in the outbox (%s)",
            recording.id,
            sequence,
            channel,
            status,
        )
    return added


def _events(recording: Recording) -> list[dict[str, object]]:
    lines = recording.log_path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


class Outbox:
    """The thread that sends the outbox's due items (started and stopped with the service)."""

    def __init__(self, state: ServiceState) -> None:
        self._state = state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="skymix-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.send_due()
            except Exception:  # noqa: BLE001 - the outbox keeps going; the next poll retries
                log.exception("the outbox could not send its due items")

    def send_due(self) -> int:
        """Try every item due now once; how many were tried."""
        now = utcnow()
        with self._state.db.session() as session:
            due = list(
                session.scalars(
                    select(OutboxItem)
                    .where(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now)
                    .order_by(OutboxItem.next_attempt_at)
                    .limit(50)
                )
            )
        tried = 0
        for item in due:
            if self._stop.is_set():
                break
            with self._state.db.session() as session:
                claimed = session.execute(
                    update(OutboxItem)
                    .where(
                        OutboxItem.id == item.id,
                        OutboxItem.status == "pending",
                        OutboxItem.attempts == item.attempts,
                    )
                    .values(next_attempt_at=now + timedelta(seconds=CLAIM_S))
                )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            tried += 1
            self._try(item)
        return tried

    def _try(self, item: OutboxItem) -> None:
        status, error = "pending", None
        try:
            with self._state.db.session() as session:
                row = session.get(RecordingRow, item.recording_id)
                folder = None if row is None else Path(row.work_dir)
                app_id = None if row is None else row.app_id
            if folder is None or app_id is None:
                status, error = "failed", "the recording is gone"
            else:
                recording = Recording.load(folder / EVENT_LOG_NAME)
                if recording.notification_sequence != item.notification:
                    status, error = "failed", "superseded by a newer notification"
                else:
                    delivered, error = self._send(item, recording, folder, app_id)
                    status = "delivered" if delivered else "pending"
        except Exception as exc:  # noqa: BLE001 - named by its type only: no secret in it
            error = f"unexpected {type(exc).__name__}"
            log.exception("outbox item %d could not be sent", item.id)
        attempts = item.attempts + 1
        retries = schedule()
        next_at = utcnow()
        if status == "pending":
            if attempts >= len(retries):
                status = "failed"
            else:
                next_at = utcnow() + timedelta(seconds=retries[attempts])
        with self._state.db.session() as session:
            session.execute(
                update(OutboxItem)
                .where(OutboxItem.id == item.id)
                .values(
                    status=status,
                    attempts=attempts,
                    next_attempt_at=next_at,
                    last_error=error,
                    updated_at=utcnow(),
                )
            )
        log.info(
            "recording %s: notification %d by %s, try %d from the outbox: %s",
            item.recording_id,
            item.notification,
            item.channel,
            attempts,
            status if error is None else f"{status} ({error})",
        )

    def _send(
        self, item: OutboxItem, recording: Recording, folder: Path, app_id: str
    ) -> tuple[bool, str | None]:
        from .jobs import REPORT_NAME, delivery_options, load_settings

        settings = load_settings(self._state, app_id)
        options = delivery_options(self._state.config)
        report_file = folder / REPORT_NAME
        report = MixReport.from_json(report_file.read_bytes()) if report_file.is_file() else None
        payload = NotificationPayload.build(recording, report).to_json()
        notify = settings.notifications
        if item.channel == "webhook":
            if not notify.enabled or notify.url is None or notify.secret is None:
                return False, "the settings no longer name a webhook"
            result = send_webhook(
                notify.url,
                notify.secret.get_secret_value(),
                payload,
                webhook_id=item.webhook_id,
                max_tries=1,
                allow_private=options.allow_private,
            )
            return result.delivered, result.reason
        if options.smtp is None or not notify.emails:
            return False, "no SMTP server or no address"
        parts = message_for(payload)
        mail = send_email(
            options.smtp.target,
            options.smtp.sender,
            notify.emails,
            parts.subject,
            parts.text,
            parts.html,
        )
        return mail.sent, mail.reason
