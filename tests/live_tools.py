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

__all__ = ["JanusPage", "Peer", "live_state", "running_rooms", "store_settings"]


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

    def wait_state(
        self, state: str, bound_s: float = 60.0, recording_id: str | None = None
    ) -> dict[str, Any]:
        """The first recordingState message in ``state`` (of that recording, when given),
        waited for."""

        def found() -> dict[str, Any] | None:
            for m in self.of("recordingState"):
                if m["state"] == state and recording_id in (None, m["recordingId"]):
                    return m
            return None

        wait_until(found, state, bound_s)
        message = found()
        assert message is not None
        return message


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


class JanusPage:
    """What a browser can do with Janus by itself: a plain session (no admin key, no room
    secret) on its HTTP API, joining a room as a publisher with the pin as janus.js would (no
    media), and sending videoroom requests."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.session = int(self._post("", {"janus": "create"})["data"]["id"])
        attach = {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        self.handle = int(self._post(str(self.session), attach)["data"]["id"])

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import urllib.request
        import uuid

        data = json.dumps({"transaction": uuid.uuid4().hex, **body}).encode()
        url = self.url + (f"/{path}" if path else "")
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            reply: dict[str, Any] = json.loads(answer.read())
        return reply

    def message(self, body: dict[str, Any]) -> dict[str, Any]:
        """A videoroom request's answer (its plugin data), waited for when Janus acks first."""
        import urllib.request

        reply = self._post(f"{self.session}/{self.handle}", {"janus": "message", "body": body})
        transaction = reply.get("transaction")
        while reply.get("janus") == "ack" or reply.get("transaction") != transaction:
            with urllib.request.urlopen(f"{self.url}/{self.session}?maxev=1", timeout=40) as got:
                events = json.loads(got.read())
            for event in events if isinstance(events, list) else [events]:
                if event.get("transaction") == transaction and event.get("janus") != "ack":
                    reply = event
        if reply.get("janus") == "error":
            return {"error_code": reply["error"]["code"], "error": reply["error"]["reason"]}
        data: dict[str, Any] = reply["plugindata"]["data"]
        return data

    def join(self, room: int, pin: str, display: str) -> int:
        """Join as a publisher; the Janus user id."""
        body = {"request": "join", "ptype": "publisher", "room": room, "pin": pin}
        data = self.message({**body, "display": display})
        assert data.get("videoroom") == "joined", data
        return int(data["id"])


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


# --- media through the live rooms' own Janus, inside a network namespace ------------------------
#
# Janus never gathers ICE candidates on loopback (see janus_tools), so `record_scenario` runs
# LiveRooms (its own Janus, ICE enforced to the namespace's bridge) and aiortc publishers in a
# new user + network namespace, on the test's data folder: the rows, event logs and .mjr files it
# leaves are read (and the jobs run) by the test outside, with the storage on the host.

SCENARIO_TIMEOUT = 120.0
APP, ROOM = "live-app", "r1"


def record_scenario(data_dir: Path, workdir: Path) -> dict[str, Any]:
    """Run the scenario (``_scenario`` below) in a namespace; what it reports."""
    import os
    import signal
    import subprocess
    import sys

    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "namespace.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--net", "--kill-child", "--"]
            + [sys.executable, str(Path(__file__).resolve()), str(data_dir), str(workdir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path(__file__).parent,
        )
        try:
            process.wait(SCENARIO_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group this call started
            process.wait(10)
    result = workdir / "result.json"
    if not result.exists():
        raise AssertionError(f"the scenario failed:\n{log.read_text(errors='replace')[-8000:]}")
    report: dict[str, Any] = json.loads(result.read_text())
    return report


async def _publish_in(gateway: Any, janus: dict[str, Any], display: str, colour: int) -> Any:
    """An aiortc publisher in the live room's Janus room (with its pin), media flowing."""
    import asyncio

    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from janus_tools import JanusError, _call, _data, _Events, _Publisher, _receiving, _tracks

    session = (await _call(gateway, "", {"janus": "create"}))["data"]["id"]
    events = _Events(gateway, session)
    attach = {"janus": "attach", "plugin": "janus.plugin.videoroom"}
    handle = (await _call(gateway, str(session), attach))["data"]["id"]
    p = _Publisher(display, session, handle, events)
    path = f"{session}/{handle}"
    join = {"request": "join", "ptype": "publisher", "room": janus["room"], "pin": janus["pin"]}
    await _call(gateway, path, {"janus": "message", "body": {**join, "display": display}})
    joined = await events.wait("joined", lambda e: _data(e).get("videoroom") == "joined")
    p.user = _data(joined)["id"]
    p.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    rgb = [(200, 40, 40), (40, 90, 210), (40, 200, 60)][colour]
    for track in _tracks(rgb, 440.0 + 220 * colour):
        pc.addTrack(track)
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}
    body = {"request": "configure", "audio": True, "video": True}
    await _call(gateway, path, {"janus": "message", "body": body, "jsep": offer})
    answer = await events.wait("the answer", lambda e: "jsep" in e)
    if _data(answer).get("configured") != "ok":
        raise JanusError(f"configure failed: {answer}")
    await pc.setRemoteDescription(RTCSessionDescription(answer["jsep"]["sdp"], "answer"))
    await events.wait("webrtcup", lambda e: bool(e.get("janus") == "webrtcup"))
    for kind in ("audio", "video"):
        await events.wait(f"{kind} media", _receiving(kind))
    await asyncio.sleep(0)
    return p


async def _scenario(rooms: LiveRooms, workdir: Path) -> None:
    """Three recordings of one room:
    1. Ada publishes and starts; Bob joins 1.5 s in and leaves 1.5 s later; Ada stops.
    2. Ada starts again; Janus is SIGKILLed 2 s in (STOP relay_failed, files truncated).
    3. Ada, on the new Janus, starts a third; the whole service is killed 2 s in.
    """
    import asyncio
    import os
    import signal

    from janus_tools import Gateway, _call, _hang_up

    def gateway() -> Gateway:
        assert rooms.relay._process is not None
        return Gateway(rooms.relay._process)

    result: dict[str, Any] = {"users": {}, "recordings": []}
    ada, bob = Peer("Ada"), Peer("Bob")
    joined = rooms.join(APP, ROOM, "Ada", ada.send)
    ada.peer_id = joined.peer_id
    p_ada = await _publish_in(gateway(), joined.janus, "Ada", 0)
    rooms.publisher(ada.peer_id, p_ada.user)
    result["users"]["Ada"] = p_ada.user
    # what the page could ask Janus by itself, its media flowing: to record into a file of its
    # choice (the room's lock_record must make it have no effect)
    evil = workdir / "evil"
    body = {"request": "configure", "record": True, "filename": str(evil)}
    await _call(gateway(), f"{p_ada.session}/{p_ada.handle}", {"janus": "message", "body": body})
    await asyncio.sleep(1.5)
    written = list(workdir.glob("evil*")) + list(rooms.config.data_dir.rglob("*.mjr"))
    result["evil"] = sorted(str(p) for p in written)
    rooms.start_recording(ada.peer_id)
    await asyncio.sleep(1.5)
    joined_bob = rooms.join(APP, ROOM, "Bob", bob.send)
    bob.peer_id = joined_bob.peer_id
    p_bob = await _publish_in(gateway(), joined_bob.janus, "Bob", 1)
    rooms.publisher(bob.peer_id, p_bob.user)
    result["users"]["Bob"] = p_bob.user
    await asyncio.sleep(1.5)
    await _hang_up(gateway(), p_bob)
    rooms.leave(bob.peer_id)
    await asyncio.sleep(1.0)
    rooms.stop_recording(ada.peer_id)
    result["recordings"].append(ada.wait_state("STOP")["recordingId"])

    rooms.start_recording(ada.peer_id)
    await asyncio.to_thread(wait_until, lambda: len(ada.of("recordingState")) >= 3, "START 2")
    await asyncio.sleep(2.0)
    pid = rooms.relay.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(
        wait_until,
        lambda: any(m.get("reason") == "relay_failed" for m in ada.of("recordingState")),
        "relay_failed",
    )
    result["recordings"].append(ada.of("recordingState")[-1]["recordingId"])
    await asyncio.to_thread(wait_until, rooms.relay.ready.is_set, "the relay back")
    p_ada.events.stopped = True
    rooms.leave(ada.peer_id)

    carol = Peer("Carol")
    joined = rooms.join(APP, ROOM, "Carol", carol.send)
    carol.peer_id = joined.peer_id
    p_carol = await _publish_in(gateway(), joined.janus, "Carol", 2)
    rooms.publisher(carol.peer_id, p_carol.user)
    result["users"]["Carol"] = p_carol.user
    rooms.start_recording(carol.peer_id)
    started = carol.wait_state("START")
    result["recordings"].append(started["recordingId"])
    await asyncio.sleep(2.0)
    result["messages"] = {"Ada": ada.messages, "Bob": bob.messages, "Carol": carol.messages}
    (workdir / "result.json").write_text(json.dumps(result))
    os._exit(0)  # killed: no stop, no goodbye; Janus dies with the process


def _scenario_main(data_dir: Path, workdir: Path) -> None:
    import asyncio
    import logging

    from janus_tools import BRIDGE, _setup_namespace_network

    logging.basicConfig(level=logging.INFO)
    _setup_namespace_network()
    state = make_state(data_dir, janus_ice_interface=BRIDGE)
    rooms = LiveRooms(state)
    rooms.start()
    asyncio.run(asyncio.wait_for(_scenario(rooms, workdir), SCENARIO_TIMEOUT - 20))


if __name__ == "__main__":
    import sys

    _scenario_main(Path(sys.argv[1]), Path(sys.argv[2]))
