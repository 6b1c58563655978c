"""A recording's states (START -> STOP -> LINK, or ERROR), their subscribers, and the event log
a dead process's work is resumed from.

The states and the subscriber's arguments are the product's JS API (``recordingState`` with
state, recording_id, url, error), so the relay can pass them on unchanged. A recording never goes
back and never twice to the same state; the one way out of ERROR is LINK, when a later delivery of
the same recording succeeds, and that LINK is announced like any other.

Every transition is appended to the recording's event log (JSON lines beside its working files,
``EVENT_LOG_NAME`` by convention) and fsynced before any subscriber hears of it: whatever a
subscriber, a webhook receiver or a person was told is on disk. Other events (the mixed file, the
upload, each webhook or e-mail attempt and outcome) go to the same log with the recording's next
sequence number, so ``Recording.load`` can tell what is left to do (mix, upload, link,
notifications) after a crash. A crash can tear only the last line: ``load`` drops it and cuts the
file back to the last whole line, so the next append starts clean.

Each LINK or ERROR is a notification with its own per-recording sequence number (1, 2, ...), so
a receiver can order them and spot one it missed. ``NotificationPayload`` is the webhook body,
built from the recording, the mix's report and the upload's result.

Ids are ULIDs from a monotonic generator: they sort by creation time as strings, even for ids
made in the same millisecond by this process.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ulid import ULIDGenerator

from ..errors import (
    DescriptionError,
    InternalError,
    OptionsError,
    OutputConflictError,
    OutputError,
    RecordingStateError,
    SkymixError,
)
from ..report import MixReport

__all__ = [
    "BackupCopy",
    "MultipartStart",
    "EVENT_LOG_NAME",
    "ErrorReason",
    "NotificationDue",
    "NotificationParticipant",
    "NotificationPayload",
    "Pending",
    "Recording",
    "RecordingState",
    "StateListener",
    "StoredUpload",
    "new_recording_id",
]

logger = logging.getLogger(__name__)

EVENT_LOG_NAME = "events.jsonl"
"""The event log's file name in a recording's working folder, by convention."""

_IDS = ULIDGenerator()
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RESERVED_KINDS = frozenset(
    {"recording", "state", "mixed", "upload", "notification", "multipart_started", "backup_copy"}
)
_CHANNEL_OUTCOMES = frozenset({"delivered", "failed"})


class RecordingState(enum.StrEnum):
    """The states of the product's JS API."""

    START = "START"
    STOP = "STOP"
    LINK = "LINK"
    ERROR = "ERROR"


_NEXT: dict[RecordingState | None, frozenset[RecordingState]] = {
    None: frozenset({RecordingState.START}),
    RecordingState.START: frozenset({RecordingState.STOP, RecordingState.ERROR}),
    RecordingState.STOP: frozenset({RecordingState.LINK, RecordingState.ERROR}),
    RecordingState.ERROR: frozenset({RecordingState.LINK}),
    RecordingState.LINK: frozenset(),
}


def new_recording_id() -> str:
    """A new recording id: a ULID string, sortable by creation time."""
    return str(_IDS.generate())


def _now() -> datetime:
    """Now, to the millisecond the log keeps: a recording read back equals the one written."""
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: object) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class ErrorReason:
    """Why a recording went to ERROR: a skymix error code and its message (never a secret:
    skymix messages carry none)."""

    code: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorReason:
        """The reason an exception gives: its own code, or ``internal_error`` for one skymix did
        not raise on purpose (named by its type only, as its text may hold anything)."""
        if isinstance(exc, SkymixError):
            return cls(exc.code, str(exc))
        return cls(InternalError.code, f"unexpected {type(exc).__name__}")

    def to_json(self) -> dict[str, str]:
        """As JSON data: ``{"code": ..., "message": ...}``."""
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


StateListener = Callable[[str, str, str | None, ErrorReason | None], None]
"""A ``recordingState`` subscriber: (state, recording_id, url, error)."""


@dataclass(frozen=True, slots=True)
class StoredUpload:
    """Where the file was stored complete and verified (``backup``: the backup destination,
    after the primary failed)."""

    bucket: str
    key: str
    size: int
    sha256: str
    backup: bool = False

    def to_json(self) -> dict[str, Any]:
        """As JSON data, the fields by name."""
        return {
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "backup": self.backup,
        }


@dataclass(frozen=True, slots=True)
class MultipartStart:
    """A multipart upload the store began for an attempt: aborted before the next attempt, so
    a crash mid-upload leaves nothing unfinished (and billed) once the delivery resumes."""

    bucket: str
    key: str
    upload_id: str


@dataclass(frozen=True, slots=True)
class BackupCopy:
    """The file copied complete into the operator's backup folder after every upload failed."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class NotificationDue:
    """An announced LINK or ERROR still to be sent on ``channels`` ("webhook", "email"): those
    with no final outcome (delivered, or failed after their retries) in the log."""

    sequence: int
    state: RecordingState
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pending:
    """What is left to do for a recording: mix (no mixed file recorded), upload (none recorded),
    link (LINK not reached), and the announcement still to send, if any."""

    mix: bool
    upload: bool
    link: bool
    notification: NotificationDue | None


class Recording:
    """One recording: its id, app id and room, its state and its event log.

    Make one with ``Recording.create`` (a new log) or ``Recording.load`` (an existing log, after
    a crash or for ``skymix upload``). Thread-safe: transitions and appends are serialised, and
    subscribers are called in subscription order, in the thread that made the transition.
    """

    def __init__(self, log_path: Path, recording_id: str, app_id: str, room: str) -> None:
        self.log_path = log_path
        self.id = recording_id
        self.app_id = app_id
        self.room = room
        self.created_at: datetime = _now()
        self.state: RecordingState | None = None
        self.url: str | None = None
        self.link_expires_at: datetime | None = None
        self.error: ErrorReason | None = None
        self.started_at: datetime | None = None
        self.stopped_at: datetime | None = None
        self.mixed_file: Path | None = None
        self.upload: StoredUpload | None = None
        self.multipart_starts: list[MultipartStart] = []
        self.backup_copy: BackupCopy | None = None
        self.notification_sequence = 0
        self._sequence = 0
        self._notifications: dict[int, tuple[RecordingState, set[str], set[str]]] = {}
        self._listeners: list[StateListener] = []
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        state = self.state.value if self.state else None
        return (
            f"Recording(id={self.id!r}, app_id={self.app_id!r}, room={self.room!r}, state={state})"
        )

    # -- making and reading ------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        log_path: str | os.PathLike[str],
        app_id: str,
        room: str,
        recording_id: str | None = None,
    ) -> Recording:
        """A new recording with a new log at ``log_path`` (refused if one is there: that is a
        recording to ``load``). ``recording_id`` keeps an id given from outside (letters, digits,
        ``._-``, at most 128); by default a new ULID."""
        if not app_id:
            raise OptionsError("must not be empty", field="app_id")
        if not room:
            raise OptionsError("must not be empty", field="room")
        rid = new_recording_id() if recording_id is None else recording_id
        if not _ID_PATTERN.fullmatch(rid):
            raise OptionsError(
                f"{rid!r} is not a recording id (letters, digits, '._-', at most 128)",
                field="recording_id",
            )
        path = Path(log_path)
        rec = cls(path, rid, app_id, room)
        header = {
            "seq": 1,
            "at": _iso(rec.created_at),
            "event": "recording",
            "recording_id": rid,
            "app_id": app_id,
            "room": room,
        }
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(json.dumps(header, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(path.parent)
        except FileExistsError:
            raise OutputConflictError(
                f"{path}: a recording's event log is already there", path=str(path)
            ) from None
        except OSError as e:
            raise OutputError(f"{path}: cannot write the event log: {e.strerror}") from e
        rec._sequence = 1
        return rec

    @classmethod
    def load(cls, log_path: str | os.PathLike[str]) -> Recording:
        """The recording a log describes, to resume its work (``pending``). A torn last line (a
        crash while writing) is dropped and cut from the file; any other unreadable line is a
        ``DescriptionError`` naming its line."""
        path = Path(log_path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DescriptionError(
                f"cannot read the event log: {e.strerror}", file=str(path)
            ) from e
        lines = data.split(b"\n")
        whole, tail = lines[:-1], lines[-1]
        events: list[dict[str, Any]] = []
        good_end = 0
        for n, raw in enumerate(whole, start=1):
            event = _parse_line(raw)
            if event is None:
                if n == len(whole) and not tail:
                    logger.warning("%s: dropped a torn last line %d", path, n)
                    break
                raise DescriptionError("not a JSON object", file=str(path), line=n)
            events.append(event)
            good_end += len(raw) + 1
        else:
            if tail:
                logger.warning("%s: dropped a torn last line %d", path, len(whole) + 1)
        if not events or events[0].get("event") != "recording":
            raise DescriptionError("does not begin with the recording's header", file=str(path))
        for n, event in enumerate(events, start=1):
            if event.get("seq") != n:
                raise DescriptionError(
                    f"sequence number {event.get('seq')!r} where {n} was due",
                    file=str(path),
                    line=n,
                )
        head = events[0]
        try:
            rec = cls(path, str(head["recording_id"]), str(head["app_id"]), str(head["room"]))
            rec.created_at = _parse_time(head["at"]) or rec.created_at
            for event in events[1:]:
                rec._replay(event)
        except (KeyError, ValueError, TypeError) as e:
            raise DescriptionError(f"an event the log cannot hold: {e}", file=str(path)) from e
        rec._sequence = len(events)
        if good_end < len(data):
            try:
                with open(path, "r+b") as f:
                    f.truncate(good_end)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise OutputError(f"{path}: cannot cut the torn line: {e.strerror}") from e
        return rec

    def _replay(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        at = _parse_time(event["at"])
        if kind == "state":
            self._apply(
                RecordingState(event["state"]),
                at,
                event.get("url"),
                _parse_time(event.get("expires_at")),
                ErrorReason(**event["error"]) if event.get("error") else None,
                event.get("notification"),
            )
        elif kind == "mixed":
            self.mixed_file = self._resolve(event["file"])
        elif kind == "upload":
            self.upload = StoredUpload(
                str(event["bucket"]),
                str(event["key"]),
                int(event["size"]),
                str(event["sha256"]),
                bool(event["backup"]),
            )
        elif kind == "notification":
            self._mark(int(event["notification"]), event["channel"], event["outcome"])
        elif kind == "multipart_started":
            self.multipart_starts.append(
                MultipartStart(str(event["bucket"]), str(event["key"]), str(event["upload_id"]))
            )
        elif kind == "backup_copy":
            self.backup_copy = BackupCopy(
                self._resolve(event["path"]), int(event["size"]), str(event["sha256"])
            )

    def _resolve(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.log_path.parent / p

    # -- subscribers -------------------------------------------------------------------------

    def on(self, event: str, fn: StateListener) -> None:
        """Subscribe ``fn`` to ``"recordingState"``: called with (state, recording_id, url,
        error) after each transition is on disk. One that raises is logged and the others are
        still called."""
        if event != "recordingState":
            raise OptionsError(f"no event {event!r}; there is 'recordingState'", field="event")
        with self._lock:
            self._listeners.append(fn)

    def off(self, event: str, fn: StateListener) -> None:
        """Unsubscribe ``fn`` (nothing if it was not subscribed)."""
        with self._lock:
            if event == "recordingState" and fn in self._listeners:
                self._listeners.remove(fn)

    # -- transitions -------------------------------------------------------------------------

    def start(self) -> None:
        """The relay started recording."""
        self._transition(RecordingState.START)

    def stop(self) -> None:
        """The relay stopped recording: mixing and delivery follow."""
        self._transition(RecordingState.STOP)

    def link(self, url: str, expires_at: datetime) -> None:
        """Delivered: the download link and when it expires (timezone-aware). Also the way out of
        ERROR, when a later delivery succeeds."""
        if not url:
            raise OptionsError("must not be empty", field="url")
        if expires_at.tzinfo is None:
            raise OptionsError("must carry a timezone", field="expires_at")
        self._transition(RecordingState.LINK, url=url, expires_at=expires_at)

    def fail(self, error: BaseException | ErrorReason) -> None:
        """Failed: the reason is the error's code and message."""
        reason = error if isinstance(error, ErrorReason) else ErrorReason.from_exception(error)
        self._transition(RecordingState.ERROR, error=reason)

    def _transition(
        self,
        state: RecordingState,
        *,
        url: str | None = None,
        expires_at: datetime | None = None,
        error: ErrorReason | None = None,
    ) -> None:
        with self._lock:
            if state not in _NEXT[self.state]:
                was = self.state.value if self.state else "new"
                raise RecordingStateError(
                    f"recording {self.id}: {was} cannot go to {state.value}",
                    recording_id=self.id,
                    state=self.state.value if self.state else None,
                    to=state.value,
                )
            at = _now()
            notification = (
                self.notification_sequence + 1
                if state in (RecordingState.LINK, RecordingState.ERROR)
                else None
            )
            fields: dict[str, Any] = {"state": state.value}
            if url is not None and expires_at is not None:
                fields["url"] = url
                fields["expires_at"] = _iso(expires_at)
            if error is not None:
                fields["error"] = error.to_json()
            if notification is not None:
                fields["notification"] = notification
            self._write("state", fields, at)
            self._apply(state, at, url, expires_at, error, notification)
            logger.info("recording %s: %s", self.id, state.value)
            for fn in list(self._listeners):
                try:
                    fn(state.value, self.id, self.url, self.error)
                except Exception:
                    logger.exception("recording %s: a recordingState subscriber failed", self.id)

    def _apply(
        self,
        state: RecordingState,
        at: datetime | None,
        url: str | None,
        expires_at: datetime | None,
        error: ErrorReason | None,
        notification: int | None,
    ) -> None:
        if state not in _NEXT[self.state]:
            raise ValueError(f"{self.state} cannot go to {state.value}")
        self.state = state
        if state is RecordingState.START:
            self.started_at = at
        elif state is RecordingState.STOP:
            self.stopped_at = at
        elif state is RecordingState.LINK:
            self.url, self.link_expires_at, self.error = url, expires_at, None
        else:
            self.error = error
        if notification is not None:
            self.notification_sequence = notification
            self._notifications[notification] = (state, set(), set())

    # -- other events ------------------------------------------------------------------------

    def record_mixed(self, file: str | os.PathLike[str]) -> int:
        """The mixed file is complete (a path beside the log is stored relative to it)."""
        p = Path(file)
        try:
            name = str(p.relative_to(self.log_path.parent)) if p.is_absolute() else str(p)
        except ValueError:
            name = str(p)
        with self._lock:
            seq = self._write("mixed", {"file": name})
            self.mixed_file = self._resolve(name)
            return seq

    def record_upload(
        self, *, bucket: str, key: str, size: int, sha256: str, backup: bool = False
    ) -> int:
        """The file is stored complete and verified (``backup``: in the backup destination)."""
        stored = StoredUpload(bucket, key, size, sha256, backup)
        with self._lock:
            seq = self._write("upload", stored.to_json())
            self.upload = stored
            return seq

    def record_multipart_start(self, bucket: str, key: str, upload_id: str) -> int:
        """The store began multipart upload ``upload_id`` of ``bucket``/``key`` (written before
        any part is sent, so that a later attempt can abort it)."""
        start = MultipartStart(bucket, key, upload_id)
        with self._lock:
            seq = self._write(
                "multipart_started", {"bucket": bucket, "key": key, "upload_id": upload_id}
            )
            self.multipart_starts.append(start)
            return seq

    def record_backup_copy(self, path: str | os.PathLike[str], size: int, sha256: str) -> int:
        """The file is complete in the operator's backup folder at ``path``."""
        copy = BackupCopy(Path(path), size, sha256)
        with self._lock:
            seq = self._write("backup_copy", {"path": str(path), "size": size, "sha256": sha256})
            self.backup_copy = copy
            return seq

    def record_notification(
        self, notification: int, channel: str, outcome: str, reason: str | None = None
    ) -> int:
        """A notification's final outcome on one channel ("webhook", "email"): "delivered", or
        "failed" with its reason."""
        if outcome not in _CHANNEL_OUTCOMES:
            raise OptionsError(f"{outcome!r} is not delivered or failed", field="outcome")
        with self._lock:
            if notification not in self._notifications:
                raise OptionsError(
                    f"recording {self.id} announced no notification {notification}",
                    field="notification",
                )
            fields: dict[str, Any] = {
                "notification": notification,
                "channel": channel,
                "outcome": outcome,
            }
            if reason is not None:
                fields["reason"] = reason
            seq = self._write("notification", fields)
            self._mark(notification, channel, outcome)
            return seq

    def append(self, kind: str, **fields: Any) -> int:
        """Any other event (an upload try, a webhook attempt and its status, ...), JSON values
        only and never a secret; returns its sequence number."""
        if kind in _RESERVED_KINDS:
            raise OptionsError(f"{kind!r} events are written by their own methods", field="kind")
        with self._lock:
            return self._write(kind, fields)

    def _mark(self, notification: int, channel: str, outcome: str) -> None:
        _, delivered, failed = self._notifications[notification]
        (delivered if outcome == "delivered" else failed).add(channel)

    def _write(self, kind: str, fields: dict[str, Any], at: datetime | None = None) -> int:
        seq = self._sequence + 1
        line = {"seq": seq, "at": _iso(at or _now()), "event": kind, **fields}
        try:
            text = json.dumps(line, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise OptionsError(f"an event must be JSON data: {e}", field=kind) from e
        try:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise OutputError(
                f"{self.log_path}: cannot append to the event log: {e.strerror}"
            ) from e
        self._sequence = seq
        return seq

    # -- what is left ------------------------------------------------------------------------

    def pending(self, channels: Iterable[str] = ("webhook", "email")) -> Pending:
        """What is left to do to reach LINK, and the latest announcement if one of the
        ``channels`` the settings use has no final outcome for it yet. Older unfinished
        announcements are superseded: their receivers see the gap in the sequence numbers."""
        with self._lock:
            linked = self.state is RecordingState.LINK
            due = None
            if self.notification_sequence:
                n = self.notification_sequence
                state, delivered, failed = self._notifications[n]
                done = delivered | failed
                missing = tuple(c for c in channels if c not in done)
                if missing:
                    due = NotificationDue(n, state, missing)
            return Pending(
                mix=not linked and self.mixed_file is None,
                upload=not linked and self.upload is None,
                link=not linked,
                notification=due,
            )


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return event if isinstance(event, dict) else None


def _fsync_dir(directory: Path) -> None:
    """Make a new file's name durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NotificationParticipant(BaseModel):
    """Who was in the recording: first joined and last left, seconds from its start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    joined_s: float | None
    left_s: float | None


class NotificationPayload(BaseModel):
    """The webhook body announcing a LINK or an ERROR."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_id: str
    room: str
    recording_id: str
    state: RecordingState
    sequence: int = Field(description="the recording's notification number: 1, 2, ... in order")
    url: str | None = Field(description="the download link (LINK)")
    url_expires_at: datetime | None
    bucket: str | None
    key: str | None
    backup: bool = Field(description="the file went to a backup destination")
    stored_in: Literal["primary", "backup", "backup_folder"] | None = Field(
        description="where the file is: the application's bucket, its backup bucket (both "
        "LINK), or the operator's backup folder (ERROR: to be delivered later); none when "
        "nothing was stored"
    )
    duration_s: float | None
    size: int | None
    sha256: str | None
    participants: list[NotificationParticipant]
    started_at: datetime | None
    stopped_at: datetime | None
    error: dict[str, str] | None = Field(description='{"code": ..., "message": ...} (ERROR)')

    @classmethod
    def build(
        cls,
        recording: Recording,
        report: MixReport | None = None,
        *,
        bucket: str | None = None,
        key: str | None = None,
        size: int | None = None,
        sha256: str | None = None,
        backup: bool = False,
    ) -> NotificationPayload:
        """The payload of the recording's latest announcement (it must be in LINK or ERROR),
        with the mix's report (none when it failed before mixing) and the upload's result as
        plain values (by default the upload the recording's log holds)."""
        state = recording.state
        if state not in (RecordingState.LINK, RecordingState.ERROR):
            raise RecordingStateError(
                f"recording {recording.id}: nothing to announce in state "
                f"{state.value if state else 'new'}",
                recording_id=recording.id,
                state=state.value if state else None,
                to=None,
            )
        up = recording.upload
        stored_in: Literal["primary", "backup", "backup_folder"] | None = None
        if up is not None:
            bucket = up.bucket if bucket is None else bucket
            key = up.key if key is None else key
            size = up.size if size is None else size
            sha256 = up.sha256 if sha256 is None else sha256
            backup = backup or up.backup
            stored_in = "backup" if backup else "primary"
        elif recording.backup_copy is not None:
            copy = recording.backup_copy
            size = copy.size if size is None else size
            sha256 = copy.sha256 if sha256 is None else sha256
            backup, stored_in = True, "backup_folder"
        participants = []
        for p in report.participants if report else []:
            spans = p.presence_s
            participants.append(
                NotificationParticipant(
                    id=p.id,
                    name=p.name,
                    joined_s=spans[0][0] if spans else None,
                    left_s=spans[-1][1] if spans else None,
                )
            )
        return cls(
            app_id=recording.app_id,
            room=recording.room,
            recording_id=recording.id,
            state=state,
            sequence=recording.notification_sequence,
            url=recording.url,
            url_expires_at=recording.link_expires_at,
            bucket=bucket,
            key=key,
            backup=backup,
            stored_in=stored_in,
            duration_s=report.duration_s if report else None,
            size=size,
            sha256=sha256,
            participants=participants,
            started_at=recording.started_at,
            stopped_at=recording.stopped_at,
            error=recording.error.to_json() if recording.error else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The body as JSON data."""
        return self.model_dump(mode="json")

    def to_bytes(self) -> bytes:
        """The body as sent: compact UTF-8 JSON."""
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":")).encode()
