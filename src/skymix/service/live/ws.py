"""The live rooms' signalling socket, ``GET /rest/live/ws``: one WebSocket per page, JSON text
messages (docs/live.md, "Signalling protocol").

A page says ``hello`` with a public key or a room token within ``HELLO_TIMEOUT_S``, then joins one
room at a time, tells which Janus publisher it is, starts and stops recordings. The rooms
themselves (Janus, recordings, who is where) are ``LiveRooms``' (``state.live``); its methods
block (database, Janus), so they run in a worker thread. What it sends to this page (peers
joining and leaving, recording states) comes through ``send``, callable from any thread: it posts
to this socket's queue on the event loop, and one writer task sends the queue in order. Messages
for the page that arrive while its join is under way wait until ``joined`` has gone out.

A socket that closes without ``leave`` leaves its room all the same. Refused credentials close
the socket with 4401 (4403 for a page origin the public key does not allow, 4429 after too many
failures from one address), no hello in time with 4408, the service stopping with 4409; an
``error`` message before the close says why (a close frame's reason holds 123 bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...errors import OptionsError, SkymixError
from ..auth import FailureLimiter
from ..state import ServiceState
from .access import (
    BrowserAuthError,
    BrowserGrant,
    authenticate_browser,
    check_display_name,
    check_room_name,
)

__all__ = [
    "CLOSE_NO_HELLO",
    "CLOSE_STOPPING",
    "CLOSE_TOO_MANY",
    "HELLO_TIMEOUT_S",
    "MAX_MESSAGE_BYTES",
    "MAX_WAITING",
    "end_sockets",
    "serve_socket",
]

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 16 * 1024
#: Messages a page may have waiting to be handled; a page that sends faster is closed (1008).
MAX_WAITING = 64
CLOSE_NO_HELLO = 4408
CLOSE_STOPPING = 4409
CLOSE_TOO_MANY = 4429
#: The largest Janus id (Janus masks its random ids to 53 bits: safe as JSON numbers in JS).
_MAX_JANUS_ID = 2**53
_UNAVAILABLE = "live rooms are not available (this service runs without a Janus relay)"
#: Worker threads the live rooms' calls may take at once (they wait on Janus): the rest of
#: anyio's pool stays for /rest.
LIVE_THREADS = 16


def _live_limiter(websocket: WebSocket) -> anyio.CapacityLimiter:
    """The live calls' own limiter (one per app), made in its event loop on first use."""
    limiter: anyio.CapacityLimiter | None = getattr(websocket.app.state, "live_threads", None)
    if limiter is None:  # one event loop: no other coroutine runs between the look and the set
        limiter = anyio.CapacityLimiter(LIVE_THREADS)
        websocket.app.state.live_threads = limiter
    return limiter


class _JoinInfo(Protocol):
    peer_id: str
    janus: dict[str, Any]
    peers: list[dict[str, str]]
    recording: dict[str, Any] | None


class _Rooms(Protocol):
    """What the socket asks of ``LiveRooms`` (skymix.service.live.rooms)."""

    def join(
        self, app_id: str, room: str, name: str, send: Callable[[dict[str, Any]], None]
    ) -> _JoinInfo: ...
    def publisher(self, peer_id: str, janus_id: int) -> None: ...
    def leave(self, peer_id: str) -> None: ...
    def start_recording(self, peer_id: str) -> None: ...
    def stop_recording(self, peer_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


#: The open sockets, for ``end_sockets`` (touched on the event loop's thread only).
_OPEN: set[_Socket] = set()
#: The tasks waiting for the sockets' closes before the service goes on stopping.
_ENDING: set[asyncio.Task[None]] = set()
#: How long the service's stop waits for the pages' close frames to be sent.
_END_BOUND_S = 1.0


def end_sockets(then: Callable[[], None] = lambda: None) -> None:
    """Close every open signalling socket with 4409 (the service is stopping), then call
    ``then`` on the event loop once their close frames are sent (at most ``_END_BOUND_S``
    later; at once when none is open). Safe from a signal handler or another thread."""
    sockets = list(_OPEN)
    if not sockets:
        then()
        return
    loop = sockets[0].loop

    async def close_all() -> None:
        writers = [s.writer_task for s in sockets if s.writer_task is not None]
        for socket in sockets:
            socket.close(CLOSE_STOPPING, "the service is stopping")
        try:
            if writers:
                await asyncio.wait(writers, timeout=_END_BOUND_S)
        finally:
            then()

    def start() -> None:
        task = loop.create_task(close_all())
        _ENDING.add(task)
        task.add_done_callback(_ENDING.discard)

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:  # the loop is closed: nothing to close
        then()


def _limiter(websocket: WebSocket, state: ServiceState) -> FailureLimiter:
    limiter: FailureLimiter | None = getattr(websocket.app.state, "live_limiter", None)
    if limiter is None:  # one event loop: no other coroutine runs between the look and the set
        limiter = FailureLimiter(state.config.auth_failures_per_minute)
        websocket.app.state.live_limiter = limiter
    return limiter


class _Socket:
    """One page's socket: its queues, its grant, the peer it is once joined."""

    def __init__(self, websocket: WebSocket, state: ServiceState) -> None:
        self.websocket = websocket
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any] | _Close] = asyncio.Queue()
        self.grant: BrowserGrant | None = None
        self.peer_id: str | None = None
        #: The peer id LiveRooms gave, set in the worker thread as soon as join returns (a
        #: socket closed meanwhile still leaves).
        self.joined_as: str | None = None
        #: Messages for the page held back while its join is under way.
        self.early: list[dict[str, Any]] | None = None
        self.closing = False
        self.writer_task: asyncio.Task[None] | None = None

    # -- sending ------------------------------------------------------------------------------

    def _post(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        if self.early is not None:
            self.early.append(message)
        else:
            self.outbox.put_nowait(message)

    def send(self, message: dict[str, Any]) -> None:
        """LiveRooms' ``send``: from any thread, never blocks, never raises."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the socket is gone
            self.loop.call_soon_threadsafe(self._post, message)

    def error(self, code: str, message: str) -> None:
        self._post({"type": "error", "code": code, "message": message})

    def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close with ``code``."""
        if not self.closing:
            self.closing = True
            self.early = None
            self.outbox.put_nowait(
                _Close(code, reason.encode("utf-8")[:120].decode("utf-8", "ignore"))
            )

    async def writer(self) -> None:
        """Send the queue in order until a close (or the page is gone)."""
        while True:
            item = await self.outbox.get()
            try:
                if isinstance(item, _Close):
                    await self.websocket.close(item.code, item.reason)
                    return
                await self.websocket.send_text(json.dumps(item, ensure_ascii=True))
            except (WebSocketDisconnect, RuntimeError, OSError):
                return

    async def reader(self) -> None:
        """The page's messages into the inbox, checked for size and shape; None at the end."""
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    self.error("bad_message", "messages are JSON text, not binary")
                elif len(text) > MAX_MESSAGE_BYTES or len(text.encode()) > MAX_MESSAGE_BYTES:
                    self.error(
                        "message_too_large", f"a message is at most {MAX_MESSAGE_BYTES} bytes"
                    )
                else:
                    try:
                        parsed = json.loads(text)
                    except ValueError:
                        self.error("bad_json", "a message is a JSON object")
                        continue
                    if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
                        self.error("bad_message", 'a message is a JSON object with a "type"')
                        continue
                    if self.inbox.qsize() >= MAX_WAITING:
                        self.error("too_many_messages", "messages sent faster than handled")
                        self.close(1008, "too many messages")
                        return
                    self.inbox.put_nowait(parsed)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        finally:
            self.inbox.put_nowait(None)

    # -- the protocol -------------------------------------------------------------------------

    async def hello(self, client: str, limiter: FailureLimiter) -> bool:
        """Wait for the hello and check it; False when the socket was closed instead."""
        try:
            message = await asyncio.wait_for(self.inbox.get(), HELLO_TIMEOUT_S)
        except TimeoutError:
            self.error("no_hello", f"no hello within {HELLO_TIMEOUT_S:g} s")
            self.close(CLOSE_NO_HELLO, "no hello in time")
            return False
        if message is None:
            return False
        try:
            if message["type"] != "hello":
                raise BrowserAuthError('the first message must be {"type": "hello", "key": ...}')
            origin = self.websocket.headers.get("origin")
            key = message.get("key")
            self.grant = await anyio.to_thread.run_sync(
                authenticate_browser, self.state, key, origin
            )
        except BrowserAuthError as exc:
            if limiter.blocked_for(client) > 0:  # a valid key is always taken, as on /rest
                self.error("too_many_failures", "too many refused keys from this address; wait")
                self.close(CLOSE_TOO_MANY, "too many failed attempts")
                return False
            limiter.fail(client)
            log.info("live: hello refused from %s: %s", client, exc)
            self.error(exc.code, str(exc))
            self.close(exc.close_code, str(exc))
            return False
        self._post({"type": "welcome", "appId": self.grant.app_id, "room": self.grant.room})
        return True

    def rooms(self) -> _Rooms | None:
        rooms: _Rooms | None = getattr(self.state, "live", None)
        return rooms

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ping":
            self._post({"type": "pong"})
        elif kind == "hello":
            self.error("already_welcomed", "this socket has said hello already")
        elif kind == "join":
            await self.join(message)
        elif kind in ("publisher", "start", "stop", "leave"):
            rooms = self.rooms()
            if self.peer_id is None or rooms is None:
                if kind != "leave":
                    self.error("not_joined", f"join a room before {kind}")
                return
            await self.call(kind, rooms, self.peer_id, message)
        else:
            self.error("unknown_type", f"unknown message type {kind[:40]!r}")

    async def join(self, message: dict[str, Any]) -> None:
        assert self.grant is not None
        if self.peer_id is not None:
            self.error("already_joined", "this socket is in a room already: leave it first")
            return
        try:
            room = check_room_name(message.get("room"))
            name = check_display_name(message.get("name"))
        except OptionsError as exc:
            self.error(f"{exc.field}_invalid", str(exc))
            return
        if self.grant.room is not None and room != self.grant.room:
            self.error("room_not_allowed", "the room token is for another room")
            return
        rooms = self.rooms()
        if rooms is None:
            self.error("live_unavailable", _UNAVAILABLE)
            return
        app_id = self.grant.app_id

        def join() -> _JoinInfo:
            info = rooms.join(app_id, room, name, self.send)
            self.joined_as = info.peer_id
            return info

        self.early = []
        try:
            info = await anyio.to_thread.run_sync(join, limiter=_live_limiter(self.websocket))
        except SkymixError as exc:
            self.early = None
            self.error(exc.code, str(exc))
            return
        except Exception:
            self.early = None
            log.exception("live: joining room %s of %s failed", room, app_id)
            self.error("internal_error", "joining the room failed")
            return
        self.peer_id = info.peer_id
        early, self.early = self.early, None
        self._post(
            {
                "type": "joined",
                "peerId": info.peer_id,
                "room": room,
                "janus": info.janus,
                "peers": info.peers,
                "recording": info.recording,
            }
        )
        for queued in early or []:
            self._post(queued)

    async def call(self, kind: str, rooms: _Rooms, peer_id: str, message: dict[str, Any]) -> None:
        if kind == "publisher":
            janus_id = message.get("janusId")
            if type(janus_id) is not int or not 0 < janus_id < _MAX_JANUS_ID:
                self.error("janusId_invalid", "janusId is the page's Janus publisher id")
                return
            run: Callable[[], None] = lambda: rooms.publisher(peer_id, janus_id)  # noqa: E731
        elif kind == "start":
            run = lambda: rooms.start_recording(peer_id)  # noqa: E731
        elif kind == "stop":
            run = lambda: rooms.stop_recording(peer_id)  # noqa: E731
        else:
            self.peer_id = self.joined_as = None
            run = lambda: rooms.leave(peer_id)  # noqa: E731
        try:
            await anyio.to_thread.run_sync(run, limiter=_live_limiter(self.websocket))
        except SkymixError as exc:
            if kind in ("start", "stop"):
                self._post(_refused(exc))
            else:
                self.error(exc.code, str(exc))
        except Exception:
            log.exception("live: %s of peer %s failed", kind, peer_id)
            self.error("internal_error", f"{kind} failed")

    async def leave_room(self) -> None:
        """Leave the room the page is in (its socket closed without ``leave``)."""
        peer_id = self.peer_id or self.joined_as
        rooms = self.rooms()
        if peer_id is None or rooms is None:
            return
        self.peer_id = self.joined_as = None
        try:
            await anyio.to_thread.run_sync(
                rooms.leave, peer_id, limiter=_live_limiter(self.websocket)
            )
        except Exception:
            log.exception("live: peer %s could not leave its room", peer_id)


def _refused(exc: SkymixError) -> dict[str, Any]:
    """The recordingState ERROR for a start or stop LiveRooms refused by raising."""
    return {
        "type": "recordingState",
        "state": "ERROR",
        "recordingId": None,
        "url": None,
        "error": {"code": exc.code, "message": str(exc)},
        "reason": None,
    }


async def serve_socket(websocket: WebSocket) -> None:
    """Run one page's signalling socket until it closes."""
    state: ServiceState = websocket.app.state.service
    client = websocket.client.host if websocket.client is not None else "unknown"
    limiter = _limiter(websocket, state)
    await websocket.accept()
    socket = _Socket(websocket, state)
    _OPEN.add(socket)
    reader = asyncio.create_task(socket.reader())
    writer = socket.writer_task = asyncio.create_task(socket.writer())
    try:
        if await socket.hello(client, limiter):
            while not socket.closing:
                message = await socket.inbox.get()
                if message is None:
                    break
                await socket.handle(message)
    finally:
        _OPEN.discard(socket)
        await socket.leave_room()
        socket.close(1000, "")
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(writer, 5)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
