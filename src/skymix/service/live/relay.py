"""The media relay of the live rooms: the service's own Janus, or an existing one by URL.

``Relay`` holds one control session (a `VideoRoomClient` with the videoroom admin key) and keeps
it alive well inside Janus's 60 s session timeout. ``check`` tells a dead relay (the own process
exited, or the API stopped answering) from a live one; ``bring_up`` starts the own Janus again
(or reconnects to the existing one). The own Janus is started with ``die_with_parent``, so the
thread that starts it must live as long as the service: `LiveRooms` calls ``bring_up`` from its
own background thread only.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import OptionsError, RelayError
from ...relay.janus import JanusProcess, VideoRoomClient, janus_available
from ..config import ServiceConfig

__all__ = ["KEEPALIVE_S", "Relay"]

log = logging.getLogger(__name__)

#: How often the control session is kept alive (Janus ends a session after 60 s of silence).
KEEPALIVE_S = 15.0
#: How long a request to Janus may take before the relay counts as not answering.
REQUEST_TIMEOUT_S = 10.0
#: Where the own Janus keeps its config and log, under the data folder.
JANUS_DIR = "janus"

T = TypeVar("T")


class Relay:
    """The Janus the live rooms use, and the control session that drives its videoroom."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.unavailable: str | None = None  # why there are no live rooms, or None
        self.mode = "own"
        if config.janus == "off":
            self.mode, self.unavailable = "off", "live rooms are off in this service"
        elif config.janus != "auto":
            self.mode = "url"
            if not config.janus_admin_key:
                raise OptionsError(
                    "an existing Janus needs its videoroom admin key", field="janus_admin_key"
                )
            if not config.janus_ws_url:
                raise OptionsError(
                    "an existing Janus needs the WebSocket URL browsers connect to",
                    field="janus_ws_url",
                )
        elif not janus_available():
            self.mode, self.unavailable = "off", "Janus is not installed on this machine"
        self._process: JanusProcess | None = None
        self._client: VideoRoomClient | None = None
        self._lock = threading.RLock()
        self._last_keepalive = 0.0
        self._reconnected = False
        #: Counts the relays brought up: a Janus room belongs to the generation that made it.
        self.generation = 0
        self.ready = threading.Event()

    def __repr__(self) -> str:
        return f"Relay(mode={self.mode!r}, generation={self.generation}, up={self.ready.is_set()})"

    @property
    def ws_url(self) -> str | None:
        """The Janus WebSocket URL browsers are given."""
        if self.config.janus_ws_url:
            return self.config.janus_ws_url
        return None if self._process is None else self._process.ws_url

    @property
    def http_url(self) -> str | None:
        """The Janus HTTP API the service drives (None while the own Janus is not running)."""
        if self.mode == "url":
            return self.config.janus
        return None if self._process is None else self._process.url

    @property
    def pid(self) -> int | None:
        """The own Janus's process id (None for an existing Janus or none)."""
        return None if self._process is None else self._process.pid

    def bring_up(self) -> None:
        """Start the own Janus (or connect to the existing one) and open the control session;
        RelayError when it cannot. Call from a thread that lives as long as the service."""
        if self.mode == "off":
            raise RelayError(self.unavailable or "no relay")
        with self._lock:
            self._drop()
            if self.mode == "own":
                process = JanusProcess(
                    self.config.data_dir / JANUS_DIR,
                    admin_key=secrets.token_urlsafe(24),
                    websockets=True,
                    ice_interface=self.config.janus_ice_interface,
                    nat_1_1=self.config.janus_nat_1_1,
                    die_with_parent=True,
                )
                process.start()
                self._process = process
                client = process.client(timeout=REQUEST_TIMEOUT_S)
            else:
                client = VideoRoomClient(
                    self.config.janus,
                    admin_key=self.config.janus_admin_key,
                    timeout=REQUEST_TIMEOUT_S,
                )
            try:
                client.connect()
            except RelayError:
                self._drop()
                raise
            self._client = client
            self._reconnected = False
            self._last_keepalive = time.monotonic()
            self.generation += 1
            self.ready.set()
        log.info("live rooms: relay up (%s, generation %d)", self.mode, self.generation)

    def check(self) -> str | None:
        """Why the relay is dead (the own Janus exited, or its API does not answer), or None;
        keeps the control session alive (a lost session is opened again). Its requests run
        outside the lock (``call`` must not wait on them); only the background thread calls it,
        as it does ``bring_up``."""
        with self._lock:
            client = self._client
            if not self.ready.is_set() or client is None:
                return None
            process = self._process
            if process is not None and process.process is not None:
                code = process.process.poll()
                if code is not None:
                    return f"Janus exited with status {code}"
            if time.monotonic() - self._last_keepalive < KEEPALIVE_S:
                return None
            self._last_keepalive = time.monotonic()
        try:
            client.keepalive()
            return None
        except RelayError as exc:
            log.warning("live rooms: Janus keepalive failed (%s); opening a new session", exc)
        try:
            client.connect()
        except RelayError as exc:
            return f"Janus does not answer: {exc}"
        with self._lock:
            self._reconnected = True  # Janus may have been restarted: its rooms are looked for
        return None

    def take_reconnected(self) -> bool:
        """Whether ``check`` opened a new session since the last call (Janus may have lost its
        rooms in between: the caller lists them)."""
        with self._lock:
            reconnected, self._reconnected = self._reconnected, False
            return reconnected

    def fail(self) -> None:
        """Forget a dead relay (the own Janus is stopped): rooms of this generation are gone."""
        with self._lock:
            self.ready.clear()
            self._drop(dead=True)

    def _drop(self, *, dead: bool = False) -> None:
        """Close the session and stop the own Janus; a dead one is neither asked nor waited
        for long (a hung Janus gets SIGKILL after a second)."""
        if self._client is not None:
            if not dead:
                self._client.close()
            self._client = None
        if self._process is not None:
            self._process.stop(timeout=1.0 if dead else 5.0)
            self._process = None

    def stop(self) -> None:
        """Close the control session and stop the own Janus (rooms in it end)."""
        with self._lock:
            self.ready.clear()
            self._drop()

    def call(self, fn: Callable[[VideoRoomClient], T]) -> T:
        """Run fn with the control client; RelayError when the relay is down. Requests of
        several rooms run side by side (Janus matches answers by transaction): one that hangs
        does not hold up the others. A relay being (re)started is refused at once, before the
        lock that ``bring_up`` holds while it starts Janus."""
        if not self.ready.is_set():
            raise RelayError("the media relay is not running")
        with self._lock:
            client = self._client
            if client is None or not self.ready.is_set():
                raise RelayError("the media relay is not running")
        return fn(client)

    def rooms(self) -> list[dict[str, Any]]:
        """Janus's rooms (with record and rec_dir), for recovery."""
        return self.call(lambda c: c.list_rooms())
