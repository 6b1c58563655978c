"""When Janus received each beep and flash of the fake media, from its .mjr files.

Every packet in a .mjr carries the time Janus received it. Decoding each publisher's Opus
packets and VP8 frames (PyAV) finds the packet with a beep's first loud samples and the frame
that turns white: what the relay got, before skymix mixed anything. The scenarios compare the
mix with this to tell the mixer's offsets from the browser's own: on busy cores Chromium's fake
camera falls behind its fake microphone (tens to hundreds of ms within a call), so a flash and
its beep leave the browser that far apart, and Janus records no RTCP that could undo it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from skymix.ingest.mjr import parse_videoroom_name, read_mjr

LOUD = 0.35  # between the tone's 0.1 and the beep's 0.6


@dataclass
class Marks:
    """Arrival times (Unix s) of a publisher's beeps and flashes at Janus."""

    beeps: list[float] = field(default_factory=list)
    flashes: list[float] = field(default_factory=list)


def _payload(packet: bytes) -> bytes:
    """The RTP payload: past the CSRCs and the header extension."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    return packet[offset:]


def _vp8_descriptor(payload: bytes) -> int:
    """The length of the VP8 payload descriptor (RFC 7741)."""
    size = 1
    if payload[0] & 0x80:
        extension = payload[1]
        size = 2
        if extension & 0x80:
            size += 2 if payload[size] & 0x80 else 1
        if extension & 0x40:
            size += 1
        if extension & 0x30:
            size += 1
    return size


def _beeps(path: Path) -> list[float]:
    decoder = av.CodecContext.create("opus", "r")
    found: list[float] = []
    quiet = 0
    for datagram in read_mjr(path):
        for frame in decoder.decode(av.Packet(_payload(datagram.data))):
            loud = float(np.abs(frame.to_ndarray()[0]).max()) > LOUD
            if loud and quiet > 10:  # 0.2 s of no beep before
                found.append(datagram.arrival_ns / 1e9)
            quiet = 0 if loud else quiet + 1
    return found


def _flashes(path: Path) -> list[float]:
    """Frames by RTP timestamp, each arrived with its last packet; white ones' first frames."""
    packets = list(read_mjr(path))
    # VP8's payload type is the one most packets have (Janus also records RTX retransmissions)
    vp8 = collections.Counter(d.data[1] & 0x7F for d in packets).most_common(1)[0][0]
    frames: dict[int, bytearray] = collections.OrderedDict()
    arrival: dict[int, float] = {}
    for datagram in packets:
        packet = datagram.data
        if packet[1] & 0x7F != vp8:
            continue
        timestamp = int.from_bytes(packet[4:8], "big")
        payload = _payload(packet)
        frames.setdefault(timestamp, bytearray()).extend(payload[_vp8_descriptor(payload) :])
        arrival[timestamp] = datagram.arrival_ns / 1e9
    decoder = av.CodecContext.create("vp8", "r")
    found: list[float] = []
    white = False
    for timestamp, data in frames.items():
        try:
            decoded = decoder.decode(av.Packet(bytes(data)))
        except av.error.InvalidDataError:  # a frame before the first keyframe
            continue
        for frame in decoded:
            y = frame.to_ndarray(format="gray")
            h, w = y.shape
            now = float(np.median(y[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3])) > 200
            if now and not white:
                found.append(arrival[timestamp])
            white = now
    return found


def janus_marks(folder: Path) -> dict[str, Marks]:
    """Per Janus user id (as the report's participant ids): its beeps' and flashes' arrival."""
    marks: dict[str, Marks] = collections.defaultdict(Marks)
    for path in sorted(folder.glob("*.mjr")):
        name = parse_videoroom_name(path.name)
        assert name is not None, path
        user = str(name.user)
        if name.kind == "audio":
            marks[user].beeps = _beeps(path)
        elif name.kind == "video":
            marks[user].flashes = _flashes(path)
    return dict(marks)
