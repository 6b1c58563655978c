"""Live recordings a previous run of the service left in START (it was killed, or stopped).

At start, each live row in START is either followed, when the relay is an existing Janus whose
room still exists and still records into the recording's folder (the room is registered again
with its secret and pin from the row), or stopped with reason ``service_restarted`` and mixed
from what was recorded: the manifest comes from the participants log, whose open spans end when
Janus last wrote a file. Nothing recorded is left behind silently.
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
from ...errors import RelayError, SkymixError
from ..jobs import captures_root
from ..models import RecordingRow, utcnow
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
    relay: Relay, live: dict[str, Any], decrypt: Callable[[str], str]
) -> None:
    """An existing Janus may still record a room the service does not follow: tell it to stop
    (the room's secret is in the row), so no file grows after the recording's STOP."""
    if relay.mode != "url" or not relay.ready.is_set() or "secret_enc" not in live:
        return
    try:
        secret = decrypt(str(live["secret_enc"]))
        number = int(live["janus_room"])
        relay.call(lambda c: c.enable_recording(number, False, secret=secret))
    except (SkymixError, KeyError, ValueError) as exc:
        log.info("live recovery: Janus room not told to stop recording: %s", exc)


def recover(rooms: LiveRooms) -> None:
    """Follow or stop every live recording left in START."""
    from .rooms import _Live, stop_recording_row

    state = rooms.state
    with state.db.session() as session:
        rows = session.scalars(
            select(RecordingRow).where(
                RecordingRow.kind == "live", RecordingRow.state == RecordingState.START.value
            )
        ).all()
    for row in rows:
        live = dict(row.spec.get("live") or {})
        rec_dir = captures_root(state.config, row.app_id) / str(live.get("rec_dir", ""))
        try:
            recording = Recording.load(Path(row.work_dir) / EVENT_LOG_NAME)
        except SkymixError as exc:  # its folder is gone: ERROR, so the room may record again
            log.error("live recovery: recording %s cannot be read: %s", row.id, exc)
            with state.db.session() as session:
                session.execute(
                    update(RecordingRow)
                    .where(RecordingRow.id == row.id)
                    .values(
                        state=RecordingState.ERROR.value,
                        error_code=exc.code,
                        error_message="the recording's event log cannot be read: "
                        + str(exc).replace(str(state.config.data_dir) + os.sep, ""),
                        updated_at=utcnow(),
                    )
                )
            continue
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
                continue
        _stop_janus_recording(rooms.relay, live, state.box.decrypt)
        end = min(max(_last_write(rec_dir, started), started), now)
        log.warning("live recovery: recording %s stopped (service restarted)", row.id)
        stop_recording_row(state, recording, rec_dir, started, end, "service_restarted")
        rooms.watch(row.id, row.app_id, row.room)
