"""Live recordings a previous run of the service left in START (it was killed, or stopped).

At start, each live row in START is either followed, when the relay is an existing Janus whose
room still exists and still records into the recording's folder (the room is registered again
with its secret and pin from the row), or stopped with reason ``service_restarted`` and mixed
from what was recorded: the manifest comes from the participants log, whose open spans end when
Janus last wrote a file. A row whose event log is gone or unreadable gets a new one (the old one
kept aside) and is stopped the same way, so its .mjr files are still mixed; when even that fails
it ends in ERROR with its job queued (the job announces it). An existing Janus is told to stop
recording and destroy the room of every recording that is not followed (when it answers again,
if it does not now). One row that fails does not keep the others, nor the service, from starting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from ...deliver.states import EVENT_LOG_NAME, Recording, RecordingState
from ...errors import CaptureError, RelayError, SkymixError
from ..jobs import captures_root
from ..models import Job, RecordingRow, utcnow
from ..state import ServiceState
from .relay import Relay

if TYPE_CHECKING:
    from .rooms import LiveRooms

__all__ = ["recover"]

log = logging.getLogger(__name__)


def _when(text: object, default: datetime) -> datetime:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return default


def _last_write(rec_dir: Path, default: datetime) -> datetime:
    """When Janus last wrote one of the recording's files (default when there is none)."""
    times = [p.stat().st_mtime for p in rec_dir.glob("*.mjr")]
    return datetime.fromtimestamp(max(times), UTC) if times else default


def _still_recording(relay: Relay, live: dict[str, Any], rec_dir: Path) -> bool:
    """Whether the relay (an existing Janus) still has the room, recording into rec_dir."""
    if relay.mode != "url" or not relay.ready.is_set():
        return False
    try:
        rooms = relay.rooms()
    except RelayError as exc:
        log.warning("live recovery: Janus rooms not listed: %s", exc)
        return False
    for room in rooms:
        if room.get("room") == live.get("janus_room"):
            return bool(room.get("record")) and room.get("rec_dir") == str(rec_dir.resolve())
    return False


def _stop_janus_recording(
    rooms: LiveRooms, live: dict[str, Any], decrypt: Callable[[str], str]
) -> None:
    """An existing Janus may still record a room the service does not follow: it is told to
    stop and destroy the room (the room's secret is in the row), so no file grows after the
    recording's STOP; when the relay is down, as soon as it answers."""
    if rooms.relay.mode != "url" or "secret_enc" not in live:
        return
    try:
        secret = decrypt(str(live["secret_enc"]))
        number = int(live["janus_room"])
    except (SkymixError, KeyError, ValueError) as exc:
        log.error("live recovery: Janus room not told to stop recording: %s", exc)
        return
    rooms.forget_janus_room(number, secret)


def _load_or_renew(state: ServiceState, row: RecordingRow) -> Recording:
    """The row's event log; one that is gone or unreadable is replaced by a new one in START
    (an unreadable one is kept aside as ``events.jsonl.unreadable``), so the recording can still
    be stopped and mixed. Raises when even that cannot be done."""
    path = Path(row.work_dir) / EVENT_LOG_NAME
    try:
        return Recording.load(path)
    except SkymixError as exc:
        why = str(exc).replace(str(state.config.data_dir) + os.sep, "")
        log.error("live recovery: recording %s: its event log cannot be read: %s", row.id, why)
    if path.exists():
        path.replace(path.with_name(EVENT_LOG_NAME + ".unreadable"))
    path.parent.mkdir(parents=True, exist_ok=True)
    recording = Recording.create(path, row.app_id, row.room, row.id)
    recording.start()
    recording.append("event_log_renewed", reason=why)
    return recording


def _fail_row(state: ServiceState, row_id: str, exc: BaseException) -> None:
    """The last resort: the row in ERROR with its job queued, which announces it."""
    message = str(exc).replace(str(state.config.data_dir) + os.sep, "")
    code = exc.code if isinstance(exc, SkymixError) else "recovery_failed"
    now = utcnow()
    with state.db.session() as session:
        session.execute(
            update(RecordingRow)
            .where(RecordingRow.id == row_id, RecordingRow.state == RecordingState.START.value)
            .values(
                state=RecordingState.ERROR.value,
                error_code=code,
                error_message=f"the recording could not be recovered: {message}",
                updated_at=now,
            )
        )
        if session.get(Job, row_id) is None:
            session.add(Job(recording_id=row_id, status="queued", created_at=now))
    if state.executor is not None:
        state.executor.submit(row_id)


def recover(rooms: LiveRooms) -> None:
    """Follow or stop every live recording left in START (each on its own: one that fails is
    ERROR, announced, and the others go on). Rows are loaded one by one: a spec that cannot be
    decoded fails its row only."""
    state = rooms.state
    try:
        with state.db.session() as session:
            ids = session.scalars(
                select(RecordingRow.id).where(
                    RecordingRow.kind == "live", RecordingRow.state == RecordingState.START.value
                )
            ).all()
    except Exception:  # noqa: BLE001 - the database itself: the next start tries again
        log.exception("live recovery: recordings left in START not listed")
        return
    for row_id in ids:
        row: RecordingRow | None = None
        try:
            with state.db.session() as session:
                row = session.get(RecordingRow, row_id)
            if row is not None:
                _recover(rooms, row)
        except Exception as exc:  # noqa: BLE001 - this row only; the service starts
            log.exception("live recovery: recording %s could not be recovered", row_id)
            if row is not None:  # an existing Janus must not record on into its folder
                try:
                    live = dict((row.spec or {}).get("live") or {})
                    _stop_janus_recording(rooms, live, state.box.decrypt)
                except Exception:  # noqa: BLE001 - logged; the row still ends in ERROR
                    log.exception("live recovery: recording %s: Janus not told to stop", row_id)
            try:
                _fail_row(state, row_id, exc)
            except Exception:  # noqa: BLE001 - the database itself: the next start tries again
                log.exception("live recovery: recording %s left in START", row_id)


def _recover(rooms: LiveRooms, row: RecordingRow) -> None:
    from .rooms import _Live, stop_recording_row

    state = rooms.state
    live = dict((row.spec or {}).get("live") or {})
    rec_dir = captures_root(state.config, row.app_id) / str(live.get("rec_dir", ""))
    if not live.get("rec_dir"):
        raise CaptureError("the recording's spec names no folder of .mjr files")
    recording = _load_or_renew(state, row)
    now = datetime.now(UTC)
    started = _when(live.get("started_at"), row.created_at)
    if _still_recording(rooms.relay, live, rec_dir):
        try:
            secret = state.box.decrypt(str(live["secret_enc"]))
            pin = state.box.decrypt(str(live["pin_enc"]))
            settings = rooms._settings(row.app_id)[0]
        except (SkymixError, KeyError) as exc:
            log.error("live recovery: recording %s cannot be followed: %s", row.id, exc)
        else:
            limits = settings.limits if settings is not None else None
            rooms.follow(
                row.app_id,
                row.room,
                int(live["janus_room"]),
                secret,
                pin,
                _Live(
                    row.id,
                    recording,
                    rec_dir,
                    started,
                    limits.max_length_s if limits else 14400,
                    limits.empty_room_s if limits else 60,
                ),
            )
            recording.append("live_followed")
            log.info("live recovery: recording %s still runs in Janus; followed", row.id)
            return
    _stop_janus_recording(rooms, live, state.box.decrypt)
    end = min(max(_last_write(rec_dir, started), started), now)
    log.warning("live recovery: recording %s stopped (service restarted)", row.id)
    stop_recording_row(state, recording, rec_dir, started, end, "service_restarted")
    rooms.watch(row.id, row.app_id, row.room)
