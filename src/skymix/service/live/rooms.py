"""Live rooms: who is in which room, the Janus videoroom behind each, and its recording.

A live room is (application, room name). The first join creates its Janus videoroom (random
secret and pin, the admin key, lock_record so browsers cannot record by themselves, private so
a browser's `list` does not show it); the last
leave destroys it unless a recording runs. A recording is START at once (its row, its event log,
Janus recording into ``captures/<app_id>/live/<recording_id>/``), STOP on request, at a limit, when
the relay fails or after a service restart; at STOP the manifest is written and the usual job
(mix, deliver, LINK or ERROR) is queued. A background thread keeps the relay alive, applies the
limits, and tells the peers still in a room how its stopped recordings ended.

Every peer's ``send`` is called with the protocol's messages (docs/live.md); it must not block
or raise. The public methods are called from worker threads. One lock guards the bookkeeping
(who is where) and is never held across a Janus request, a database query or an fsync; each room
has its own lock, taken first, that orders its Janus room's creation, recording and destruction:
a Janus that hangs holds up the rooms that wait on it only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from ...deliver.settings import RecordingSettings
from ...deliver.states import (
    EVENT_LOG_NAME,
    ErrorReason,
    Recording,
    RecordingState,
    new_recording_id,
)
from ...errors import DeliveryError, RelayError, SkymixError
from ...relay.janus import VideoRoomClient
from ..jobs import CaptureSpec, captures_root, load_settings
from ..models import Job, RecordingRow, utcnow
from ..state import ServiceState
from .manifest import iso, log_presence, recorded_files, write_manifest
from .relay import Relay

__all__ = ["JoinInfo", "LiveError", "LiveRooms", "Send", "stop_recording_row"]

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]

ROOM_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Janus videoroom publishers per room (the service refuses joins beyond it).
MAX_PEERS = 16
#: Janus asks a publisher for a keyframe when it sent none for this long. Chromium answers the
#: one Janus asks at the start of a recording only if it sent none just before (a peer that had
#: just published gave no keyframe and its video was lost to the whole recording); video can
#: only be decoded from a keyframe on.
KEYFRAME_EVERY_S = 2
#: The background thread's tick, and how often it reads the rows of stopped recordings.
TICK_S = 0.25
WATCH_S = 0.5
#: How long a join waits for a relay that is being (re)started.
RELAY_WAIT_S = 20.0
#: How long the background thread waits before trying again to start a relay that failed.
RETRY_S = 5.0
#: At most this many rooms of one application at a time (a join beyond gets too_many_rooms).
MAX_ROOMS_PER_APP = 100
#: Janus's videoroom error code for a room it does not have.
NO_SUCH_ROOM = 426


class LiveError(SkymixError):
    """A live room request that cannot be done; ``code`` says which (live_unavailable,
    room_full, too_many_rooms, invalid_room, invalid_name, unknown_peer, unknown_publisher,
    publisher_taken)."""

    code = "live_error"

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class JoinInfo:
    """What a page that joined a room needs: its peer id, the Janus room to publish in, the
    other peers, and the recording that runs (or None)."""

    peer_id: str
    janus: dict[str, Any] = field(repr=False)  # holds the room's pin
    peers: list[dict[str, str]]
    recording: dict[str, Any] | None


@dataclass
class _Peer:
    peer_id: str
    key: tuple[str, str]
    name: str
    send: Send
    janus_id: int | None = None


@dataclass
class _Live:
    """A recording that runs in a room."""

    recording_id: str
    recording: Recording
    rec_dir: Path
    started_at: datetime
    max_length_s: int
    empty_room_s: int


@dataclass
class _PendingStop:
    """A recording whose STOP could not be stored (the disk, the database): tried again."""

    key: tuple[str, str]
    live: _Live
    stopped_at: datetime
    reason: str
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic() of the next try by the background thread
    done: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class _Room:
    key: tuple[str, str]
    janus_room: int | None
    secret: str = field(repr=False)
    pin: str = field(repr=False)
    generation: int
    peers: dict[str, _Peer] = field(default_factory=dict)
    live: _Live | None = None
    empty_since: float | None = None
    #: Orders the room's Janus changes (creation, recording, destruction): taken before the
    #: rooms' lock, never while holding it.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    serial: int = 0  # when its Janus room was made (LiveRooms._serials)


def recording_state(
    state: str,
    recording_id: str | None,
    *,
    url: str | None = None,
    error: dict[str, Any] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """A recordingState message."""
    return {
        "type": "recordingState",
        "state": state,
        "recordingId": recording_id,
        "url": url,
        "error": error,
        "reason": reason,
    }


def _deliver(peer: _Peer, message: dict[str, Any]) -> None:
    try:
        peer.send(message)
    except Exception:  # noqa: BLE001 - a socket's send must not stop the others'
        log.warning("live peer %s: a message could not be queued", peer.peer_id)


class LiveRooms:
    """The service's live rooms (``state.live``); see the module's docstring."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.config = state.config
        self.relay = Relay(state.config)
        self._lock = threading.RLock()
        self._rooms: dict[tuple[str, str], _Room] = {}
        self._peers: dict[str, _Peer] = {}
        self._watched: dict[str, tuple[str, str]] = {}  # stopped recording -> its room
        self._pending: dict[str, _PendingStop] = {}  # recording id -> its STOP to store
        #: Janus rooms to tell to stop recording (and to destroy when True), with their secret,
        #: when the relay could not be told at once: done when it answers again.
        self._janus_todo: dict[int, tuple[str, bool]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._last_watch = 0.0
        self._retry_at = 0.0
        self._clean_at = 0.0
        #: The relay came (back) up and its rooms are not listed yet (a failed list is retried).
        self._reconcile_due = False
        self._serials = itertools.count(1)

    def __repr__(self) -> str:
        return f"LiveRooms(rooms={len(self._rooms)}, peers={len(self._peers)}, {self.relay!r})"

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Bring the relay up (on the background thread, which must outlive the own Janus),
        stop or follow the recordings a previous run left in START, then keep watching."""
        from .recovery import recover

        self._stop.clear()
        first = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(first,), name="skymix-live", daemon=True
        )
        self._thread.start()
        first.wait(60.0)
        if self.relay.unavailable is not None:
            log.warning("live rooms are unavailable: %s", self.relay.unavailable)
            self._warned = True
        recover(self)

    def stop(self) -> None:
        """Stop the background thread and the own Janus. Recordings that run stay in START:
        the next start stops them (reason service_restarted) and mixes what was recorded; an
        existing Janus keeps recording them for the next start to follow, and its rooms that
        record nothing are destroyed (they would be left there)."""
        with self._lock:
            pending = list(self._pending.values())
        for stop in pending:  # else the next start stops it
            self._store_stop(stop)
        if self.relay.mode == "url":
            for room in self._all_rooms():
                with room.lock:
                    if room.live is None:
                        self._close_room(room)
            if self.relay.ready.is_set():
                self._clean_janus()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)
            self._thread = None
        with self._lock:
            for peer in list(self._peers.values()):
                peer.send = lambda message: None
            self._peers.clear()
            self._rooms.clear()

    def _all_rooms(self) -> list[_Room]:
        with self._lock:
            return list(self._rooms.values())

    def _room_of(self, peer: _Peer) -> _Room:
        """The peer's room (gone when the service stops under it: unknown_peer)."""
        room = self._rooms.get(peer.key)
        if room is None or peer.peer_id not in room.peers:
            raise LiveError("no such peer (its room is closed)", "unknown_peer")
        return room

    def _run(self, first: threading.Event) -> None:
        """The background thread: it must outlive any error (keepalive, limits and pending
        STOPs depend on it for the service's life)."""
        try:
            try:
                self._bring_up()
            finally:
                first.set()
            while not self._stop.wait(TICK_S):
                try:
                    self._tick()
                except Exception:  # noqa: BLE001 - the thread must go on; the log says why
                    log.exception("live rooms: background check failed")
        finally:
            self.relay.stop()

    def _bring_up(self) -> None:
        """Start the relay and reconcile its rooms; any failure is logged and tried again
        after RETRY_S (a failed room list: at the next tick)."""
        if self.relay.mode == "off":
            return
        try:
            self.relay.bring_up()
            self._reconcile()
        except RelayError as exc:
            log.error("live rooms: the relay could not be started: %s", exc)
            self._retry_at = time.monotonic() + RETRY_S
        except Exception:  # noqa: BLE001 - the disk (its config), a bad answer: tried again
            log.exception("live rooms: the relay could not be started")
            self._retry_at = time.monotonic() + RETRY_S

    def _tick(self) -> None:
        if self.relay.mode != "off":
            if self.relay.ready.is_set():
                why = self.relay.check()
                if why is not None:
                    self._relay_failed(why)
                elif self.relay.take_reconnected() or self._reconcile_due:
                    self._reconcile()
            elif time.monotonic() >= self._retry_at:
                self._bring_up()
        self._retry_pending()
        self._apply_limits()
        if time.monotonic() - self._last_watch >= WATCH_S:
            self._last_watch = time.monotonic()
            self._watch()

    def _relay_failed(self, why: str) -> None:
        """The relay is dead. The own Janus took its rooms with it; an existing Janus may only
        have been out of reach: its rooms are looked for when it answers again (_reconcile)."""
        log.error("live rooms: the relay failed: %s", why)
        self.relay.fail()
        if self.relay.mode == "own":
            with self._lock:
                self._janus_todo.clear()
            for room in self._all_rooms():
                with room.lock:
                    self._room_gone(room)
        self._bring_up()

    def _room_gone(self, room: _Room) -> None:
        """The room's Janus room is no more: its recording stops (relay_failed), its peers are
        told to join again (a new Janus room is made at the next join). Hold room.lock."""
        if room.janus_room is None:
            return
        if room.live is not None:
            self._guarded(room, "relay_failed", relay_down=True)
        room.janus_room = None
        log.warning("live room %s/%s: its Janus room is gone", *room.key)
        with self._lock:
            self._broadcast(
                room,
                {
                    "type": "error",
                    "code": "relay_restarted",
                    "message": "the media relay was restarted: join the room again",
                },
            )
            if not room.peers and self._rooms.get(room.key) is room:
                del self._rooms[room.key]

    def _reconcile(self) -> None:
        """After the relay came (back) up: the rooms Janus still has keep working, the others
        are gone; the Janus rooms left to stop or destroy are done now. Rooms made after the
        list was asked for are not judged by it."""
        made_before = next(self._serials)
        self._reconcile_due = True
        try:
            listed = {int(r["room"]) for r in self.relay.rooms()}
        except RelayError as exc:
            log.warning("live rooms: Janus rooms not listed (tried again): %s", exc)
            return
        self._reconcile_due = False
        for room in self._all_rooms():
            with room.lock:
                if room.janus_room is None or room.serial > made_before:
                    continue
                if room.janus_room in listed:
                    room.generation = self.relay.generation
                else:
                    self._room_gone(room)
        with self._lock:
            for number in list(self._janus_todo):
                if number not in listed:
                    del self._janus_todo[number]
        self._clean_janus()

    def _clean_janus(self) -> None:
        """Tell Janus to stop recording (and destroy) the rooms it could not be told about (a
        room in use is done under its lock: a recording started since is not stopped)."""
        with self._lock:
            todo = dict(self._janus_todo)
            users = {r.janus_room: r for r in self._rooms.values() if r.janus_room is not None}
        for number, job in todo.items():
            room = users.get(number)
            with room.lock if room is not None else contextlib.nullcontext():
                with self._lock:
                    if self._janus_todo.get(number) != job:
                        continue
                secret, destroy = job
                try:
                    self.relay.call(lambda c: _stop_room(c, number, secret, destroy))  # noqa: B023
                except RelayError as exc:
                    if exc.error_code is None:  # no answer: tried again later
                        log.warning("Janus room not stopped yet: %s", exc)
                        continue
                    if exc.error_code != NO_SUCH_ROOM:
                        log.error("Janus room not stopped: %s", exc)
                with self._lock:
                    if self._janus_todo.get(number) == job:
                        del self._janus_todo[number]
            log.info("Janus room stopped%s", " and destroyed" if destroy else "")

    def forget_janus_room(self, number: int, secret: str) -> None:
        """Janus must stop recording this room and destroy it (recovery); done at once when
        the relay answers, or when it answers again."""
        with self._lock:
            self._janus_todo[number] = (secret, True)
        if self.relay.ready.is_set():
            self._clean_janus()

    # -- peers -----------------------------------------------------------------------------

    def _wait_relay(self) -> None:
        if self.relay.unavailable is not None:
            if not self._warned:
                log.warning("live rooms are unavailable: %s", self.relay.unavailable)
                self._warned = True
            raise LiveError(self.relay.unavailable, "live_unavailable")
        if not self.relay.ready.wait(RELAY_WAIT_S):
            raise LiveError("the media relay is not running", "live_unavailable")

    def _has_janus_room(self, room: _Room) -> bool:
        """Whether the room's Janus room is there: the own Janus's of this generation, or an
        existing Janus's (one that is gone is set to None when the relay answers again)."""
        if room.janus_room is None:
            return False
        return self.relay.mode == "url" or room.generation == self.relay.generation

    def _janus_room(self, room: _Room) -> int:
        """The room's Janus videoroom, created when it has none (or one of a dead relay).
        Hold room.lock."""
        if self._has_janus_room(room):
            assert room.janus_room is not None
            return room.janus_room
        room.secret, room.pin = secrets.token_urlsafe(24), secrets.token_urlsafe(12)
        # read before the request: a relay restarted while it ran must not pass the room off
        # as one of the new generation
        generation = self.relay.generation
        number = self.relay.call(
            lambda c: c.create_room(
                None,
                secret=room.secret,
                pin=room.pin,
                lock_record=True,
                publishers=MAX_PEERS,
                notify_joining=True,
                fir_freq=KEYFRAME_EVERY_S,
                record=False,
                is_private=True,  # not in a browser's `list`: room numbers are not shown around
                description="skymix",
            )
        )
        room.janus_room, room.generation = number, generation
        room.serial = next(self._serials)
        log.info("live room %s/%s: Janus room created", *room.key)
        return number

    def join(self, app_id: str, room: str, name: str, send: Send) -> JoinInfo:
        """A page joins a room: its peer id, the Janus room, the others, the recording."""
        if not ROOM_NAME.fullmatch(room):
            raise LiveError(
                "a room name is 1 to 128 letters, digits, '.', '_' or '-'", "invalid_room"
            )
        if not 1 <= len(name) <= 64 or _CONTROL.search(name):
            raise LiveError("a name is 1 to 64 characters, no control characters", "invalid_name")
        self._wait_relay()
        key = (app_id, room)
        while True:
            with self._lock:
                entry = self._rooms.get(key)
                if entry is None:
                    if sum(1 for k in self._rooms if k[0] == app_id) >= MAX_ROOMS_PER_APP:
                        raise LiveError(
                            f"the application has {MAX_ROOMS_PER_APP} rooms open already",
                            "too_many_rooms",
                        )
                    entry = _Room(key, None, "", "", 0)
                    self._rooms[key] = entry
                self._check_room(entry)
            with entry.lock:
                with self._lock:
                    if self._rooms.get(key) is not entry:
                        continue  # closed meanwhile: a new one
                try:
                    number = self._janus_room(entry)
                except RelayError as exc:
                    with self._lock:
                        if not entry.peers and entry.live is None:
                            self._rooms.pop(key, None)
                    raise LiveError(
                        f"the media relay refused the room: {exc}", "live_unavailable"
                    ) from None
                with self._lock:
                    self._check_room(entry)
                    return self._add_peer(entry, number, name, send)

    def _check_room(self, entry: _Room) -> None:
        if len(entry.peers) >= MAX_PEERS:
            raise LiveError(f"the room has {MAX_PEERS} peers already", "room_full")

    def _add_peer(self, entry: _Room, number: int, name: str, send: Send) -> JoinInfo:
        app_id, room = entry.key
        peer = _Peer("p_" + secrets.token_hex(8), entry.key, name, send)
        others = [{"peerId": p.peer_id, "name": p.name} for p in entry.peers.values()]
        for other in entry.peers.values():
            _deliver(other, {"type": "peerJoined", "peerId": peer.peer_id, "name": name})
        entry.peers[peer.peer_id] = peer
        entry.empty_since = None
        self._peers[peer.peer_id] = peer
        live = entry.live
        log.info("live room %s/%s: %s joined", app_id, room, peer.peer_id)
        return JoinInfo(
            peer_id=peer.peer_id,
            janus={
                "server": self.relay.ws_url,
                "room": number,
                "pin": entry.pin,
                "iceServers": list(self.config.ice_servers),
            },
            peers=others,
            recording=None
            if live is None
            else {"state": RecordingState.START.value, "recordingId": live.recording_id},
        )

    @contextlib.contextmanager
    def _holding_room(self, peer_id: str) -> Iterator[tuple[_Peer, _Room]]:
        """The peer and its room, the room's lock held: the peer is looked up again under it
        (it may have left, or its room closed, while the lock was awaited)."""
        with self._lock:
            room = self._room_of(self._peer(peer_id))
        with room.lock:
            with self._lock:
                peer = self._peer(peer_id)
                self._room_of(peer)
            yield peer, room

    def publisher(self, peer_id: str, janus_id: int) -> None:
        """The peer publishes in its Janus room as janus_id (checked against the room's
        participants, and not another peer's); a recording that runs records its name and
        time."""
        with self._holding_room(peer_id) as (peer, room):
            number = room.janus_room
            if number is None:
                raise LiveError("the room's media relay is gone", "live_unavailable")
            try:
                listed = self.relay.call(lambda c: c.list_participants(number))
            except RelayError as exc:
                raise LiveError(
                    f"the media relay does not answer: {exc}", "live_unavailable"
                ) from None
            if not any(int(p.get("id", -1)) == janus_id for p in listed):
                raise LiveError("no such publisher in the room", "unknown_publisher")
            with self._lock:
                if any(o.janus_id == janus_id for o in room.peers.values() if o is not peer):
                    raise LiveError("another peer publishes as this Janus user", "publisher_taken")
                before, peer.janus_id = peer.janus_id, janus_id
            now = datetime.now(UTC)
            try:
                if room.live is not None and before not in (None, janus_id):
                    assert before is not None
                    log_presence(room.live.rec_dir, "leave", before, now)
                if room.live is not None:
                    log_presence(room.live.rec_dir, "publish", janus_id, now, peer.name)
            except OSError as exc:  # the peer publishes all the same; mixed without its name
                log.warning("live room %s/%s: publish not logged: %s", *peer.key, exc)

    def leave(self, peer_id: str) -> None:
        """The peer left (or its socket closed); the others are told. Idempotent."""
        with self._lock:
            peer = self._peers.get(peer_id)
            room = None if peer is None else self._rooms.get(peer.key)
            if room is None:
                self._peers.pop(peer_id, None)
                return
        with room.lock:
            with self._lock:
                if self._peers.pop(peer_id, None) is None:
                    return
                assert peer is not None
                room.peers.pop(peer_id, None)
                for other in room.peers.values():
                    _deliver(other, {"type": "peerLeft", "peerId": peer_id, "name": peer.name})
                empty = not room.peers
                if empty:
                    room.empty_since = time.monotonic()
            log.info("live room %s/%s: %s left", *peer.key, peer_id)
            if room.live is not None and peer.janus_id is not None:
                try:
                    log_presence(room.live.rec_dir, "leave", peer.janus_id, datetime.now(UTC))
                except OSError as exc:
                    log.error("live room %s/%s: leave not logged: %s", *peer.key, exc)
            if empty and room.live is None:
                self._close_room(room)

    def _close_room(self, room: _Room) -> None:
        """Destroy a room's Janus room (a relay already gone is not an error; one out of reach
        is told later). Hold room.lock."""
        with self._lock:
            if self._rooms.get(room.key) is room:
                del self._rooms[room.key]
        number, secret = room.janus_room, room.secret
        if not self._has_janus_room(room):
            return
        assert number is not None
        room.janus_room = None
        try:
            self.relay.call(lambda c: c.destroy_room(number, secret=secret))
            log.info("live room %s/%s: Janus room destroyed", *room.key)
        except RelayError as exc:
            if exc.error_code != NO_SUCH_ROOM:
                log.warning("live room %s/%s: Janus room not destroyed: %s", *room.key, exc)
                with self._lock:
                    self._janus_todo[number] = (secret, True)  # when the relay answers again

    def _peer(self, peer_id: str) -> _Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise LiveError("no such peer (it left)", "unknown_peer")
        return peer

    def peers_of(self, app_id: str, room: str) -> list[str]:
        """The peer ids in a room (for tests and the API)."""
        with self._lock:
            entry = self._rooms.get((app_id, room))
            return [] if entry is None else list(entry.peers)

    def janus_room_of(self, app_id: str, room: str) -> int | None:
        """The Janus room number behind a live room, or None."""
        with self._lock:
            entry = self._rooms.get((app_id, room))
            return None if entry is None else entry.janus_room

    def _broadcast(self, room: _Room, message: dict[str, Any]) -> None:
        for peer in list(room.peers.values()):
            _deliver(peer, message)

    # -- recording -------------------------------------------------------------------------

    def _refuse(self, peer: _Peer, code: str, message: str, **more: Any) -> None:
        _deliver(
            peer, recording_state("ERROR", None, error={"code": code, "message": message, **more})
        )

    def _settings(self, app_id: str) -> tuple[RecordingSettings | None, str, str]:
        """The application's settings, or None with the code and message of why it cannot
        record."""
        try:
            settings = load_settings(self.state, app_id)
        except DeliveryError:
            return None, "no_settings", "the application has no recording settings"
        if not settings.recording_enabled:
            return None, "recording_disabled", "recording is disabled in the settings"
        if settings.storage is None:
            return None, "no_storage", "the application's settings configure no storage"
        return settings, "", ""

    def _running_row(self, app_id: str, room: str) -> str | None:
        with self.state.db.session() as session:
            return session.scalars(
                select(RecordingRow.id).where(
                    RecordingRow.app_id == app_id,
                    RecordingRow.room == room,
                    RecordingRow.kind == "live",
                    RecordingRow.state == RecordingState.START.value,
                )
            ).first()

    def start_recording(self, peer_id: str) -> None:
        """Start the room's recording: START to every peer, or ERROR (why) to this one."""
        with self._holding_room(peer_id) as (peer, room):
            app_id, name = peer.key
            if not self._finish_pending(room.key):
                self._refuse(peer, "stop_pending", "the last recording's STOP cannot be stored yet")
                return
            running = room.live.recording_id if room.live is not None else None
            running = running or self._running_row(app_id, name)
            if running is not None:
                self._refuse(
                    peer,
                    "recording_running",
                    f"a recording is running in this room: {running}",
                    recordingId=running,
                )
                return
            settings, code, why = self._settings(app_id)
            if settings is None:
                self._refuse(peer, code, why)
                return
            if not self._has_janus_room(room) or not self.relay.ready.is_set():
                self._refuse(
                    peer, "relay_failed", "the media relay was restarted: join the room again"
                )
                return
            try:
                live = self._begin(room, peer, settings)
            except (OSError, SkymixError, SQLAlchemyError) as exc:  # the relay, disk, database
                log.error("live room %s/%s: recording not started: %s", app_id, name, exc)
                code = exc.code if isinstance(exc, SkymixError) else "start_failed"
                self._refuse(peer, code, "the recording could not be started")
                return
            with self._lock:
                room.live = live
                self._broadcast(room, recording_state("START", live.recording_id))

    def _begin(self, room: _Room, peer: _Peer, settings: RecordingSettings) -> _Live:
        """Janus records into the recording's own folder; then its row and event log."""
        app_id, name = room.key
        recording_id = new_recording_id()
        relative = f"live/{recording_id}"
        rec_dir = captures_root(self.config, app_id) / relative
        number, secret = room.janus_room, room.secret
        assert number is not None
        started = datetime.now(UTC)
        # Janus acts on enable_recording only when the room's record state changes: a stop it
        # never confirmed would make this start a no-op, its publishers writing on into the
        # previous recording's folder. So false first (a no-op when it is not recording).
        self.relay.call(lambda c: c.enable_recording(number, False, secret=secret))
        with self._lock:
            self._janus_todo.pop(number, None)  # stopped now; recording on purpose next
        rec_dir.mkdir(parents=True, exist_ok=False)
        try:
            self.relay.call(lambda c: c.set_rec_dir(number, rec_dir.resolve(), secret=secret))
            self.relay.call(lambda c: c.enable_recording(number, True, secret=secret))
        except RelayError:
            with self._lock:  # the true may have been done without an answer
                self._janus_todo[number] = (secret, False)
            shutil.rmtree(rec_dir, ignore_errors=True)
            raise
        with self._lock:
            publishing = [(o.janus_id, o.name) for o in room.peers.values() if o.janus_id]
        folder = self.config.recordings_dir / app_id / recording_id
        spec = {
            "live": {
                "janus_room": number,
                "secret_enc": self.state.box.encrypt(secret),
                "pin_enc": self.state.box.encrypt(room.pin),
                "rec_dir": relative,
                "started_at": iso(started),
                "started_by": peer.name,
            }
        }
        try:
            for janus_id, display in publishing:
                log_presence(rec_dir, "publish", janus_id, started, display)
            with self.state.db.session() as session:
                session.add(
                    RecordingRow(
                        id=recording_id,
                        app_id=app_id,
                        room=name,
                        kind="live",
                        state=RecordingState.START.value,
                        spec=spec,
                        work_dir=str(folder.resolve()),
                        created_at=utcnow(),
                        updated_at=utcnow(),
                    )
                )
                session.flush()
                folder.mkdir(parents=True, exist_ok=False)
                recording = Recording.create(folder / EVENT_LOG_NAME, app_id, name, recording_id)
                recording.start()
        except BaseException:
            try:
                self.relay.call(lambda c: c.enable_recording(number, False, secret=secret))
            except RelayError:
                with self._lock:
                    self._janus_todo[number] = (secret, False)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(rec_dir, ignore_errors=True)
            raise
        limits = settings.limits
        log.info("live room %s/%s: recording %s started", app_id, name, recording_id)
        return _Live(
            recording_id, recording, rec_dir, started, limits.max_length_s, limits.empty_room_s
        )

    def stop_recording(self, peer_id: str) -> None:
        """Stop the room's recording: STOP to every peer (ERROR to this one when none runs)."""
        with self._holding_room(peer_id) as (peer, room):
            if room.live is None:
                self._refuse(peer, "no_recording", "no recording is running in this room")
                return
            self._stop_live(room, "requested")

    def _stop_live(self, room: _Room, reason: str, *, relay_down: bool = False) -> None:
        """End the room's recording: Janus stops writing, STOP with reason to every peer, the
        job queued; the room is closed when nobody is left. A STOP that cannot be stored (the
        disk, the database) is kept and tried again until it is (``_retry_pending``). Hold
        room.lock."""
        live = room.live
        assert live is not None
        number, secret = room.janus_room, room.secret
        if not relay_down and number is not None:
            try:
                self.relay.call(lambda c: c.enable_recording(number, False, secret=secret))
            except RelayError as exc:
                log.warning(
                    "recording %s: Janus did not stop recording: %s", live.recording_id, exc
                )
                with self._lock:  # it may still write: told when it answers
                    self._janus_todo[number] = (secret, False)
        now = datetime.now(UTC)
        with self._lock:
            publishing = [o.janus_id for o in room.peers.values() if o.janus_id is not None]
            pending = _PendingStop(room.key, live, now, reason)
            self._pending[live.recording_id] = pending
            room.live = None  # only now: a failure before leaves it running, to stop again
        try:
            for janus_id in publishing:
                log_presence(live.rec_dir, "leave", janus_id, now)
        except OSError as exc:
            log.error("recording %s: leaves not logged: %s", live.recording_id, exc)
        self._store_stop(pending)
        with self._lock:
            self._broadcast(room, recording_state("STOP", live.recording_id, reason=reason))
            self._watched[live.recording_id] = room.key
            empty = not room.peers
        if empty and not relay_down:
            self._close_room(room)

    def _store_stop(self, pending: _PendingStop) -> bool:
        """Store a recording's STOP (row, event log, manifest, job) once; False when it failed
        (it stays pending)."""
        live = pending.live
        with pending.lock:
            if pending.done:
                return True
            try:
                stop_recording_row(
                    self.state,
                    live.recording,
                    live.rec_dir,
                    live.started_at,
                    pending.stopped_at,
                    pending.reason,
                )
            except Exception:  # noqa: BLE001 - kept and tried again; the log says why
                if pending.failures == 0:
                    log.exception(
                        "recording %s: its STOP could not be stored; trying again",
                        live.recording_id,
                    )
                pending.failures += 1
                pending.retry_at = time.monotonic() + RETRY_S
                return False
            pending.done = True
        with self._lock:
            self._pending.pop(live.recording_id, None)
        if pending.failures:
            log.info("recording %s: its STOP stored at last", live.recording_id)
        return True

    def _finish_pending(self, key: tuple[str, str]) -> bool:
        """Store the room's pending STOPs now; False when one still fails."""
        with self._lock:
            pending = [p for p in self._pending.values() if p.key == key]
        return all(self._store_stop(p) for p in pending)

    def _retry_pending(self) -> None:
        with self._lock:
            pending = list(self._pending.values())
            todo = bool(self._janus_todo)
        now = time.monotonic()
        for stop in pending:
            if now >= stop.retry_at:
                self._store_stop(stop)
        if todo and self.relay.ready.is_set() and time.monotonic() >= self._clean_at:
            self._clean_at = time.monotonic() + RETRY_S
            self._clean_janus()

    # -- background --------------------------------------------------------------------------

    def _apply_limits(self) -> None:
        now = time.monotonic()
        due: list[tuple[_Room, _Live, str]] = []
        with self._lock:
            for room in self._rooms.values():
                live = room.live
                if live is None:
                    continue
                length = (datetime.now(UTC) - live.started_at).total_seconds()
                if length >= live.max_length_s:
                    due.append((room, live, "max_length"))
                elif room.empty_since is not None and now - room.empty_since >= live.empty_room_s:
                    due.append((room, live, "room_empty"))
        for room, live, reason in due:
            with room.lock:
                if room.live is live:  # not stopped meanwhile
                    self._guarded(room, reason)

    def _guarded(self, room: _Room, reason: str, *, relay_down: bool = False) -> None:
        """_stop_live for the background thread: one room's failure (the database down) is
        logged and does not keep the others from stopping; its row stays in START for the
        next start to stop."""
        try:
            self._stop_live(room, reason, relay_down=relay_down)
        except Exception:  # noqa: BLE001 - logged; the other rooms go on
            log.exception("live room %s/%s: the recording's STOP failed", *room.key)

    def _watch(self) -> None:
        """LINK or ERROR of the stopped recordings' jobs, to the peers still in their rooms."""
        with self._lock:
            watched = dict(self._watched)
        if not watched:
            return
        with self.state.db.session() as session:
            rows = session.execute(
                select(
                    RecordingRow.id,
                    RecordingRow.state,
                    RecordingRow.url,
                    RecordingRow.error_code,
                    RecordingRow.error_message,
                ).where(
                    RecordingRow.id.in_(list(watched)),
                    RecordingRow.state.in_([RecordingState.LINK.value, RecordingState.ERROR.value]),
                )
            ).all()
        with self._lock:
            for rid, state_name, url, code, message in rows:
                key = self._watched.pop(rid, None)
                room = self._rooms.get(key) if key is not None else None
                if room is None:
                    continue
                error = None if code is None else {"code": code, "message": message or ""}
                self._broadcast(room, recording_state(state_name, rid, url=url, error=error))

    def watch(self, recording_id: str, app_id: str, room: str) -> None:
        """Tell the peers of (app_id, room) how this stopped recording ends (recovery)."""
        with self._lock:
            self._watched[recording_id] = (app_id, room)

    def follow(
        self, app_id: str, room: str, janus_room: int, secret: str, pin: str, live: _Live
    ) -> None:
        """Take over a recording that still runs in the relay after a restart (recovery)."""
        with self._lock:
            entry = _Room((app_id, room), janus_room, secret, pin, self.relay.generation)
            entry.live = live
            entry.empty_since = time.monotonic()
            self._rooms[entry.key] = entry


def _stop_room(client: VideoRoomClient, number: int, secret: str, destroy: bool) -> None:
    client.enable_recording(number, False, secret=secret)
    if destroy:
        client.destroy_room(number, secret=secret)


def stop_recording_row(
    state: ServiceState,
    recording: Recording,
    rec_dir: Path,
    started_at: datetime,
    stopped_at: datetime,
    reason: str,
) -> None:
    """A live recording's STOP: its manifest, its spec (the capture files, the "live" entry
    kept), STOP in its event log and row, its job queued and handed to the executor. With no
    .mjr file at all it ends in ERROR nothing_recorded, announced by the job like any ERROR.
    Safe to call again after a failure: a row no longer in START (stored by an attempt that
    failed after its commit, or finished since) is left alone, a deleted row (its application
    deleted) is given up, and the event log gets its STOP events once."""
    rid = recording.id
    app_id = recording.app_id
    root = captures_root(state.config, app_id)
    with state.db.session() as session:
        row = session.get(RecordingRow, rid)
        if row is None:
            log.error("recording %s: its row is gone (application deleted?); STOP dropped", rid)
            return
        if row.state != RecordingState.START.value:
            log.info("recording %s: already %s; its STOP is stored", rid, row.state)
            return
        live = dict((row.spec or {}).get("live") or {})
    files, unreadable = recorded_files(rec_dir)
    live.update(stopped_at=iso(stopped_at), stop_reason=reason)
    manifest: str | None = None
    if files:
        try:
            manifest = (
                write_manifest(rec_dir, files, started_at, stopped_at).relative_to(root).as_posix()
            )
        except (SkymixError, OSError) as exc:
            log.error("recording %s: no manifest (%s); mixed without names", rid, exc)
    spec = CaptureSpec(
        tuple(p.relative_to(root).as_posix() for p in files), (), manifest, None, {}
    ).to_json()
    spec["live"] = live
    if recording.state is RecordingState.START:  # not again when a try failed after it
        for path, why in unreadable:
            log.warning("recording %s: %s cannot be mixed: %s", rid, path.name, why)
            recording.append("capture_unreadable", file=path.name, reason=why)
        recording.append("live_stopped", reason=reason, files=len(files))
        recording.stop()
    if not files and recording.state is RecordingState.STOP:
        recording.fail(ErrorReason("nothing_recorded", "the relay recorded no media file"))
    error = recording.error
    now = utcnow()
    with state.db.session() as session:
        session.execute(
            update(RecordingRow)
            .where(RecordingRow.id == rid, RecordingRow.state == RecordingState.START.value)
            .values(
                state=recording.state.value if recording.state else RecordingState.STOP.value,
                spec=spec,
                error_code=None if error is None else error.code,
                error_message=None if error is None else error.message,
                updated_at=now,
            )
        )
        if session.get(Job, rid) is None:
            session.add(Job(recording_id=rid, status="queued", created_at=now))
    log.info("recording %s: STOP (%s), %d files, job queued", rid, reason, len(files))
    if state.executor is not None:
        state.executor.submit(rid)
