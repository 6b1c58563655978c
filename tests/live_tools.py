"""Helpers of the live room tests: a service state on a database of its own with its real Janus,
applications with stored settings, and peers that collect what the service sends them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service_tools import wait_until
from skymix.deliver.settings import RecordingSettings
from skymix.service.apps import create_app
from skymix.service.config import ServiceConfig
from skymix.service.live import LiveRooms
from skymix.service.models import AppSettings, utcnow
from skymix.service.state import ServiceState

__all__ = ["Peer", "live_state", "running_rooms", "store_settings"]


@dataclass
class Peer:
    """A peer's inbox: every message the service sent it, in order (thread-safe)."""

    name: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    peer_id: str = ""

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.messages.append(message)

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if m.get("type") == kind]

    def states(self) -> list[tuple[str, str | None]]:
        """(state, recordingId) of every recordingState received."""
        return [(m["state"], m["recordingId"]) for m in self.of("recordingState")]

    def wait_state(self, state: str, bound_s: float = 60.0) -> dict[str, Any]:
        """The first recordingState message in ``state`` (waited for)."""
        wait_until(
            lambda: any(m["state"] == state for m in self.of("recordingState")), state, bound_s
        )
        return next(m for m in self.of("recordingState") if m["state"] == state)


def store_settings(state: ServiceState, app_id: str, document: dict[str, Any]) -> None:
    """The application's stored settings, as the settings API stores them."""
    settings = RecordingSettings.from_json({"app_id": app_id, **document})
    now = utcnow()
    with state.db.session() as session:
        session.add(
            AppSettings(
                app_id=app_id,
                document_enc=state.box.encrypt(json.dumps(settings.to_json(reveal=True))),
                recording_enabled=settings.recording_enabled,
                created_at=now,
                updated_at=now,
            )
        )


def make_state(data_dir: Path, **fields: Any) -> ServiceState:
    """A service state (its database migrated) in data_dir."""
    config = ServiceConfig(data_dir=data_dir, **fields)
    return ServiceState.open(config)


@contextmanager
def live_state(data_dir: Path, **fields: Any) -> Iterator[tuple[ServiceState, LiveRooms]]:
    """A service state with its live rooms started (the own Janus); both closed after."""
    state = make_state(data_dir, **fields)
    rooms = LiveRooms(state)
    state.live = rooms
    try:
        rooms.start()
        yield state, rooms
    finally:
        rooms.stop()
        state.close()


def running_rooms(rooms: LiveRooms) -> dict[int, dict[str, Any]]:
    """Janus's rooms by number, as its `list` answers."""
    return {int(r["room"]): r for r in rooms.relay.rooms()}


def new_app(state: ServiceState, app_id: str, document: dict[str, Any] | None) -> None:
    """An application, with settings when document is given."""
    create_app(state, app_id)
    if document is not None:
        store_settings(state, app_id, document)
