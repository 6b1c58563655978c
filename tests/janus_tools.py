"""A real Janus videoroom for tests, with aiortc publishers, inside a private network namespace.

Janus 1.1.2 never gathers ICE candidates on a loopback interface (ice.c skips IFF_LOOPBACK), so it
cannot be confined to 127.0.0.1 on the host. Instead `record_room` runs the gateway and the
publishers in a new user + network namespace (`unshare --user --map-root-user --net`): there the
only interfaces are lo and a port-less bridge with a private address, so nothing binds on the
host's interfaces and nothing can reach the internet. Inside, Janus loads only the videoroom
plugin and the plain HTTP transport (their folders hold symlinks to those two libraries alone),
the HTTP API binds 127.0.0.1, the admin API, event handlers and loggers are off, there is no
STUN/TURN server, and ICE is enforced to the bridge.

Run as a script (`python janus_tools.py WORKDIR`, inside the namespace), it sets the namespace's
network up, starts Janus, publishes PUBLISHERS for SEND_SECONDS, stops Janus and writes
WORKDIR/users.json ({display: Janus user id}); recordings go to WORKDIR/rec.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skymix.errors import RelayError
from skymix.relay.janus import JANUS_BINARY, JANUS_LIBRARIES, JanusProcess
from skymix.relay.janus import janus_available as _janus_available
from skymix.relay.janus import write_config as _write_config

JANUS = JANUS_BINARY
JANUS_LIB = JANUS_LIBRARIES


def janus_available() -> bool:
    return _janus_available(JANUS, JANUS_LIB)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(
    directory: Path, port: int, rooms: dict[int, dict[str, object]], ice_interface: str
) -> Path:
    """The library's minimal config with static rooms; return the janus.jcfg path."""
    return _write_config(
        directory,
        http_port=port,
        admin_key=uuid.uuid4().hex,
        rooms=rooms,
        ice_interface=ice_interface,
    )


class JanusError(RuntimeError):
    pass


@dataclass
class Gateway:
    janus: JanusProcess

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.janus.process is not None
        return self.janus.process

    @property
    def url(self) -> str:
        return self.janus.url

    @property
    def log(self) -> Path:
        return self.janus.log_path

    def log_text(self) -> str:
        return self.janus.log_text()

    def request(
        self, path: str = "", body: dict[str, object] | None = None, timeout: float = 10.0
    ) -> dict[str, object]:
        """POST body (with a fresh transaction) to /janus[/path], or GET when body is None."""
        url = self.url + (f"/{path}" if path else "")
        if body is not None:
            body = {"transaction": uuid.uuid4().hex, **body}
            req = urllib.request.Request(
                url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
            )
        else:
            req = urllib.request.Request(url)
        with urllib.request.urlopen(req, timeout=timeout) as response:
            reply = json.loads(response.read())
        if isinstance(reply, dict) and reply.get("janus") == "error":
            raise JanusError(f"{body}: {reply['error']}")
        return reply

    def stop(self, timeout: float = 10.0) -> int | None:
        return self.janus.stop(timeout)


@contextlib.contextmanager
def janus_gateway(
    directory: Path, rooms: dict[int, dict[str, object]], ice_interface: str
) -> Iterator[Gateway]:
    """Start Janus with a minimal config in directory; always stop it (SIGTERM, then SIGKILL)."""
    janus = JanusProcess(directory, rooms=rooms, ice_interface=ice_interface, die_with_parent=True)
    try:
        janus.start()
    except RelayError as exc:
        raise JanusError(f"{exc}\n{janus.log_text()}") from exc
    try:
        yield Gateway(janus)
    finally:
        janus.stop()


# --- the recorded room ------------------------------------------------------------------------

ROOM = 1234
WIDTH, HEIGHT = 320, 240
SEND_SECONDS = 4.0
PUBLISHERS = {"ada": ((200, 40, 40), 440.0), "bob": ((40, 90, 210), 660.0)}  # rgb, tone Hz
BRIDGE = "skymix0"
BRIDGE_ADDRESS = "10.213.0.1/24"
NAMESPACE_TIMEOUT = 75.0


def namespaces_available() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    try:
        return (
            subprocess.run(
                ["unshare", "--user", "--map-root-user", "--net", "true"],
                check=False,
                capture_output=True,
                timeout=10,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def record_room(workdir: Path) -> dict[str, int]:
    """Run this module in a new user + network namespace; return {display: Janus user id}."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "namespace.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                "unshare",
                "--user",
                "--map-root-user",
                "--net",
                "--kill-child",
                "--",
                sys.executable,
                str(Path(__file__).resolve()),
                str(workdir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = process.wait(NAMESPACE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group this call started
            process.wait(10)
            code = None
    if code != 0:
        janus_logs = "".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(workdir.glob("janus/janus-*.log"))
        )
        raise JanusError(
            f"recording the room failed (exit {code}):\n"
            f"{log.read_text(errors='replace')[-6000:]}\n--- janus ---\n{janus_logs}"
        )
    return json.loads((workdir / "users.json").read_text())


def _setup_namespace_network() -> None:
    for command in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", BRIDGE, "type", "bridge"],
        ["ip", "addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE],
        ["ip", "link", "set", BRIDGE, "up"],
    ):
        subprocess.run(command, check=True, capture_output=True, timeout=10)
    links = subprocess.run(
        ["ip", "-o", "link"], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    assert {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()} == {
        "lo",
        BRIDGE,
    }, links


def _main(workdir: Path) -> None:
    import asyncio

    _setup_namespace_network()
    rooms = {
        ROOM: {
            "description": "skymix",
            "publishers": 4,
            "audiocodec": "opus",
            "videocodec": "vp8",
            "bitrate": 512000,
            "fir_freq": 2,
            "record": True,
            "rec_dir": str(workdir / "rec"),
        }
    }
    with janus_gateway(workdir / "janus", rooms, BRIDGE) as gateway:
        users = asyncio.run(asyncio.wait_for(_run_room(gateway), 45))
    if gateway.process.returncode != 0:
        raise JanusError(f"janus exited with {gateway.process.returncode}")
    (workdir / "users.json").write_text(json.dumps(users))


# aiortc is imported only where the publishers run (inside the namespace)


def _tracks(rgb: tuple[int, int, int], frequency: float) -> tuple[Any, Any]:
    import fractions
    import math

    import av
    import numpy as np
    from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack

    class ColourTrack(VideoStreamTrack):
        """WIDTHxHEIGHT frames of one colour at 30 fps."""

        def __init__(self) -> None:
            super().__init__()
            self.picture = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            self.picture[:] = rgb

        async def recv(self) -> av.VideoFrame:
            pts, time_base = await self.next_timestamp()
            frame = av.VideoFrame.from_ndarray(self.picture, format="rgb24").reformat(
                format="yuv420p"
            )
            frame.pts = pts
            frame.time_base = time_base
            return frame

    class ToneTrack(AudioStreamTrack):
        """A sine tone, 48 kHz mono, 20 ms frames, paced in real time."""

        RATE = 48000
        SAMPLES = 960

        def __init__(self) -> None:
            super().__init__()
            self.sent = 0
            self.start: float | None = None

        async def recv(self) -> av.AudioFrame:
            import asyncio

            if self.readyState != "live":
                raise MediaStreamError
            if self.start is None:
                self.start = time.time()
            else:
                await asyncio.sleep(self.start + self.sent / self.RATE - time.time())
            n = np.arange(self.sent, self.sent + self.SAMPLES)
            tone = (8000 * np.sin(2 * math.pi * frequency * n / self.RATE)).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self.RATE
            frame.pts = self.sent
            frame.time_base = fractions.Fraction(1, self.RATE)
            self.sent += self.SAMPLES
            return frame

    return ToneTrack(), ColourTrack()


class _Events:
    """Long-polls a Janus session's events on a daemon thread (it ends with the session)."""

    def __init__(self, gateway: Gateway, session: int) -> None:
        import queue
        import threading

        self.gateway = gateway
        self.session = session
        self.queue: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        self.stopped = False
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        while not self.stopped:
            try:
                reply = self.gateway.request(f"{self.session}?maxev=10", timeout=40)
            except Exception:  # noqa: BLE001 - session gone or gateway stopped
                return
            for event in reply if isinstance(reply, list) else [reply]:
                self.queue.put(event)

    async def wait(self, what: str, match: Callable[[dict], bool], timeout: float = 15.0) -> dict:
        import asyncio
        import queue

        # an event already taken while waiting for another counts too (Janus may report the
        # video before the audio it was not asked about first)
        for event in self.seen:
            if match(event):
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.02)
                continue
            self.seen.append(event)
            if match(event):
                return event
        raise JanusError(f"no {what} from Janus in {timeout} s; events: {self.seen}")


def _data(event: dict) -> dict:
    return event.get("plugindata", {}).get("data", {})


@dataclass
class _Publisher:
    display: str
    session: int
    handle: int
    events: _Events
    pc: Any = None
    user: int = 0


async def _call(gateway: Gateway, path: str, body: dict) -> dict:
    import asyncio

    return await asyncio.to_thread(gateway.request, path, body)


async def _publish(
    gateway: Gateway, p: _Publisher, rgb: tuple[int, int, int], frequency: float
) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    path = f"{p.session}/{p.handle}"
    await _call(
        gateway,
        path,
        {
            "janus": "message",
            "body": {"request": "join", "ptype": "publisher", "room": ROOM, "display": p.display},
        },
    )
    joined = await p.events.wait("joined", lambda e: _data(e).get("videoroom") == "joined")
    p.user = _data(joined)["id"]
    p.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN (default: Google's)
    for track in _tracks(rgb, frequency):
        pc.addTrack(track)
    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers before it returns
    await _call(
        gateway,
        path,
        {
            "janus": "message",
            "body": {"request": "configure", "audio": True, "video": True},
            "jsep": {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp},
        },
    )
    answer = await p.events.wait("the answer", lambda e: "jsep" in e)
    if _data(answer).get("configured") != "ok":
        raise JanusError(f"configure failed: {answer}")
    await pc.setRemoteDescription(
        RTCSessionDescription(answer["jsep"]["sdp"], answer["jsep"]["type"])
    )


async def _hang_up(gateway: Gateway, p: _Publisher) -> None:
    for path, body in (
        (f"{p.session}/{p.handle}", {"janus": "message", "body": {"request": "leave"}}),
        (f"{p.session}/{p.handle}", {"janus": "detach"}),
        (str(p.session), {"janus": "destroy"}),
    ):
        try:
            await _call(gateway, path, body)
        except Exception as exc:  # noqa: BLE001 - best effort; the gateway is stopped anyway
            print(f"{p.display}: {body['janus']}: {exc}", flush=True)
    p.events.stopped = True
    if p.pc is not None:
        await p.pc.close()


def _receiving(kind: str) -> Callable[[dict], bool]:
    """Matches Janus's event that it receives the publisher's media of this kind."""
    return lambda e: bool(
        e.get("janus") == "media" and e.get("type") == kind and e.get("receiving") is True
    )


async def _run_room(gateway: Gateway) -> dict[str, int]:
    import asyncio

    publishers: list[_Publisher] = []
    try:
        for display, (rgb, frequency) in PUBLISHERS.items():
            session = (await _call(gateway, "", {"janus": "create"}))["data"]["id"]
            events = _Events(gateway, session)
            handle = (
                await _call(
                    gateway, str(session), {"janus": "attach", "plugin": "janus.plugin.videoroom"}
                )
            )["data"]["id"]
            publishers.append(_Publisher(display, session, handle, events))
            await _publish(gateway, publishers[-1], rgb, frequency)
        for p in publishers:
            await p.events.wait("webrtcup", lambda e: bool(e.get("janus") == "webrtcup"))
            for kind in ("audio", "video"):
                await p.events.wait(f"{kind} media", _receiving(kind))
            if p.pc.connectionState != "connected":
                raise JanusError(f"{p.display}: connection {p.pc.connectionState}")
        await asyncio.sleep(SEND_SECONDS)
        return {p.display: p.user for p in publishers}
    finally:
        for p in publishers:
            await _hang_up(gateway, p)


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
