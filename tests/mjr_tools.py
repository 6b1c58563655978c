"""Long Janus recordings made from short real ones, for the STOP -> LINK benchmark and its test.

``extend_mjr`` repeats a real MJR00002 recording's frames until the copy lasts ``seconds``: every
loop's RTP sequence numbers run on from the previous loop's, its RTP timestamps advance by the
loop's media duration (in the stream's clock: the span of the source's timestamps plus one frame
step) and its packet times (MJR00002's per-frame ms) by the same duration in ms, so the copy reads
as one continuous stream, as Janus would have written it for a longer call. The info header (codec,
fmtp, times) is kept; its ``u`` (the first frame's real time) moves with any frames cut off the
start. A VP8 source is cut to start at its first keyframe and to end with its last complete frame
(marker bit), so every loop starts on a keyframe and holds only whole frames.

The copy is named as Janus names videoroom recordings
(``videoroom-<room>-user-<id>-<µs>-<audio|video>-<mindex>.mjr``); ``user_id`` gives it another
publisher (and another SSRC), so ``extend_room`` turns the 2 publishers of a recorded room into 4.

The source is read here with a plain frame walk, not with skymix's reader: a damaged source is
refused rather than repaired, and the tests check the copies with skymix's reader independently.

``record_chromium_room`` makes such a source with real browsers: two Debian Chromiums (their
built-in fake camera, 640x480 with a moving pattern, and fake microphone, a beep a second) publish
with Debian's janus.js to a real Janus, which records them, as a live room does, between
``enable_recording`` true and false. Janus and Chromium both refuse ICE on loopback, so this runs
(``python mjr_tools.py WORKDIR``) in a user + network namespace with lo and a port-less bridge
only, as janus_tools.record_room does.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chromium_tools import CHROMIUM, chromium_flags, serve_publish_page
from skymix.ingest.mjr import CLOCK_RATES, VIDEO_CLOCK, parse_videoroom_name
from skymix.relay.janus import JanusProcess

MAGIC = b"MJR00002"
FRAME = struct.Struct("!4sIH")  # "MEET", ms since the first frame, length
RTP_HEADER = 12
#: Janus ids are masked to 53 bits (JSON-safe); new user ids stay below this.
MAX_USER_ID = (1 << 53) - 1


@dataclass(frozen=True)
class Source:
    """A real recording's info header and its frames (ms, RTP packet), already cut to a loop."""

    info: dict[str, Any]
    frames: list[tuple[int, bytes]]

    @property
    def clock_rate(self) -> int:
        if self.info["t"] == "v":
            return VIDEO_CLOCK
        return CLOCK_RATES.get(str(self.info["c"]).lower(), 48000)


def read_source(path: Path) -> Source:
    """The header and frames of an undamaged MJR00002 audio or video recording, cut for looping
    (see the module docstring); ValueError for anything else."""
    data = path.read_bytes()
    if data[:8] != MAGIC:
        raise ValueError(f"{path.name}: not an MJR00002 recording")
    size = int.from_bytes(data[8:10], "big")
    info = json.loads(data[10 : 10 + size])
    if info.get("t") not in ("a", "v"):
        raise ValueError(f"{path.name}: only audio and video recordings loop")
    frames: list[tuple[int, bytes]] = []
    offset = 10 + size
    while offset < len(data):
        if offset + FRAME.size > len(data):
            raise ValueError(f"{path.name}: truncated frame header at {offset}")
        marker, ms, length = FRAME.unpack_from(data, offset)
        packet = data[offset + FRAME.size : offset + FRAME.size + length]
        if marker != b"MEET" or len(packet) != length or length < RTP_HEADER:
            raise ValueError(f"{path.name}: damaged frame at {offset}")
        frames.append((ms, packet))
        offset += FRAME.size + length
    if info["t"] == "v":
        if str(info.get("c")).lower() != "vp8":
            raise ValueError(f"{path.name}: only VP8 video loops (a keyframe is needed)")
        starts = [i for i, (_, packet) in enumerate(frames) if vp8_keyframe_start(packet)]
        ends = [i for i, (_, packet) in enumerate(frames) if packet[1] & 0x80]
        if not starts or not ends or ends[-1] < starts[0]:
            raise ValueError(f"{path.name}: no keyframe followed by a whole frame")
        frames = frames[starts[0] : ends[-1] + 1]
    if len(frames) < 2:
        raise ValueError(f"{path.name}: too few frames to loop")
    first_ms = frames[0][0]
    info = dict(info)
    info["u"] = int(info["u"]) + first_ms * 1000
    return Source(info, [(ms - first_ms, packet) for ms, packet in frames])


def rtp_payload(packet: bytes) -> bytes:
    """The payload of an RTP packet: after CSRCs and the header extension, before padding."""
    start = RTP_HEADER + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
    return packet[start:end]


def vp8_keyframe_start(packet: bytes) -> bool:
    """Whether an RTP packet starts a VP8 keyframe (RFC 7741: S=1, PID=0, P=0 in the frame tag)."""
    payload = rtp_payload(packet)
    if len(payload) < 2 or (payload[0] & 0x17) != 0x10:
        return False
    i = 1
    if payload[0] & 0x80:  # X: extension byte, then picture id, TL0PICIDX, TID/KEYIDX
        ext = payload[1]
        i = 2
        if ext & 0x80:
            i += 2 if payload[i] & 0x80 else 1
        if ext & 0x40:
            i += 1
        if ext & 0x30:
            i += 1
    return i < len(payload) and payload[i] & 0x01 == 0


def _step(values: Iterable[int]) -> int:
    """The usual positive difference between consecutive distinct values (a frame's duration)."""
    ordered = list(values)
    deltas = [b - a for a, b in zip(ordered, ordered[1:]) if b > a]
    if not deltas:
        raise ValueError("the timestamps do not advance")
    return int(statistics.median_low(deltas))


def videoroom_name(source: Path, user_id: int | None) -> str:
    """The source's videoroom file name, with ``user_id`` as the publisher when given."""
    name = parse_videoroom_name(source)
    if name is None or name.mindex is None:
        raise ValueError(f"{source.name}: not a Janus 1.x videoroom recording name")
    user = name.user if user_id is None else str(user_id)
    return f"videoroom-{name.room}-user-{user}-{name.time_us}-{name.kind}-{name.mindex}.mjr"


def extend_mjr(src: Path, dst: Path, seconds: float, *, user_id: int | None = None) -> Path:
    """Write into the folder ``dst`` a copy of the real recording ``src`` lasting ``seconds`` of
    media (whole loops, then the frames of the last loop that start before the end); the path.

    ``user_id`` makes it another publisher's recording: the file name's user id and the SSRC
    change, nothing else does.
    """
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    if user_id is not None and not 0 < user_id <= MAX_USER_ID:
        raise ValueError("user_id must be a positive 53-bit integer")
    source = read_source(src)
    rate = source.clock_rate
    packets = [packet for _, packet in source.frames]
    seq0 = int.from_bytes(packets[0][2:4], "big")
    ts0 = int.from_bytes(packets[0][4:8], "big")
    seqs = [(int.from_bytes(p[2:4], "big") - seq0) & 0xFFFF for p in packets]
    ticks = [(int.from_bytes(p[4:8], "big") - ts0) & 0xFFFFFFFF for p in packets]
    period_seq = max(seqs) + 1
    period_ticks = max(ticks) + _step(ticks)
    end_ticks = round(seconds * rate)
    ssrc = packets[0][8:12]
    if user_id is not None:
        ssrc = struct.pack("!I", zlib.crc32(ssrc + str(user_id).encode()))
    info = json.dumps(source.info, separators=(",", ":")).encode()
    out = dst / videoroom_name(src, user_id)
    dst.mkdir(parents=True, exist_ok=True)
    with open(out, "wb", buffering=1 << 20) as f:
        f.write(MAGIC + struct.pack("!H", len(info)) + info)
        loop = 0
        while True:
            base_ticks = loop * period_ticks
            base_us = base_ticks * 1_000_000 // rate
            for (ms, packet), seq, tick in zip(source.frames, seqs, ticks):
                at = base_ticks + tick
                if at >= end_ticks:
                    return out
                header = (
                    packet[:2]
                    + struct.pack(
                        "!HI",
                        (seq0 + loop * period_seq + seq) & 0xFFFF,
                        (ts0 + at) & 0xFFFFFFFF,
                    )
                    + ssrc
                )
                f.write(FRAME.pack(b"MEET", (base_us + ms * 1000) // 1000, len(packet)))
                f.write(header)
                f.write(packet[12:])
            loop += 1


def extend_room(files: Iterable[Path], dst: Path, seconds: float, copies: int = 1) -> list[Path]:
    """Every recording of ``files`` extended to ``seconds`` into ``dst``, ``copies`` times per
    publisher: copy 0 keeps the recorded user id, copy c gives the publisher id + c (the audio
    and video of one publisher share it). 2 recorded publishers and copies=2 make 4."""
    made = []
    for path in sorted(files):
        name = parse_videoroom_name(path)
        if name is None:
            raise ValueError(f"{path.name}: not a videoroom recording name")
        for copy in range(copies):
            user_id = None if copy == 0 else int(name.user) + copy
            made.append(extend_mjr(path, dst, seconds, user_id=user_id))
    return made


BRIDGE = "skymix0"
CHROMIUM_PUBLISHERS = ("ada", "bob")
NAMESPACE_BOUND_S = 120.0  # keeps a hung browser from hanging the caller; no speed requirement


def record_chromium_room(workdir: Path, seconds: float = 6.0) -> dict[str, int]:
    """Record two Chromium publishers for ``seconds`` in a real Janus videoroom (in a namespace
    of their own); return {display: Janus user id}. The .mjr files are in ``workdir/rec``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "namespace.log"
    command = ["unshare", "--user", "--map-root-user", "--net", "--kill-child", "--"]
    command += [sys.executable, str(Path(__file__).resolve()), str(workdir), str(seconds)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = process.wait(NAMESPACE_BOUND_S + seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group this call started
            process.wait(10)
            code = None
    if code != 0:
        raise RuntimeError(
            f"recording Chromium publishers failed (exit {code}):\n"
            f"{log.read_text(errors='replace')[-6000:]}"
        )
    users: dict[str, int] = json.loads((workdir / "users.json").read_text())
    return users


def _record_in_namespace(workdir: Path, seconds: float) -> None:
    """Inside the namespace: Janus, the page, two Chromiums publishing; record, then stop."""
    from playwright.sync_api import sync_playwright

    from janus_tools import _setup_namespace_network

    _setup_namespace_network()
    secret = uuid.uuid4().hex
    flags = chromium_flags()
    server = serve_publish_page(workdir / "www")
    site = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    with (
        JanusProcess(
            workdir / "janus", websockets=True, ice_interface=BRIDGE, die_with_parent=True
        ) as janus,
        janus.client() as client,
        sync_playwright() as driver,
    ):
        room = client.create_room(None, secret=secret, publishers=4, rec_dir=workdir / "rec")
        browsers = []
        try:
            for name in CHROMIUM_PUBLISHERS:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=flags)
                browsers.append(browser)
                page = browser.new_page()
                page.goto(site)
                page.evaluate("([s, r, n]) => publish(s, r, n)", [janus.ws_url, room, name])
                page.wait_for_function("window.up === true", timeout=30_000)
            deadline = time.monotonic() + 30
            while True:
                users = {p["display"]: p["id"] for p in client.list_participants(room)}
                if set(users) == set(CHROMIUM_PUBLISHERS) and all(
                    p["publisher"] for p in client.list_participants(room)
                ):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"publishers not up: {users}")
                time.sleep(0.1)
            time.sleep(1.0)  # let the encoders ramp up past their first frames
            client.enable_recording(room, True, secret=secret)
            time.sleep(seconds)
            client.enable_recording(room, False, secret=secret)
        finally:
            for browser in browsers:
                browser.close()
            server.shutdown()
    (workdir / "users.json").write_text(json.dumps(users))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _record_in_namespace(Path(sys.argv[1]), float(sys.argv[2]))
