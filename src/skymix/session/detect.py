"""Guessing a stream's codec from its packets, when no SDP or manifest describes it.

What can be told from the bytes is told, and said (Guess.note); what cannot is refused with a
DescriptionError that asks for a description:

- static payload types (RFC 3551: 0 PCMU, 8 PCMA, 9 G722, 13 CN, ...) by number alone;
- VP8 (RFC 7741): a valid payload descriptor on every packet and a keyframe whose VP8 header has
  the start code 9d 01 2a (the only clean place a decoder can start);
- VP9 (RFC 9628): a valid payload descriptor on every packet, every frame start beginning with
  the frame marker, and a keyframe with the sync code 49 83 42;
- H.264 (RFC 6184): every packet a single NAL unit (types 1-23), STAP-A or FU-A with the
  forbidden bit clear, and a sequence parameter set with a known profile;
- Opus (RFC 6716 / 7587): every TOC byte describes a well-formed packet, one frame duration covers
  at least 80 % of the packets, and at least 80 % of timestamp steps are whole multiples of the
  previous packet's duration at 48 kHz (losses and DTX skip whole frames). Needs 5 packets.

Anything else under a dynamic payload type (including RTX, which cannot say which stream it
repairs) is refused. Input is what a stream stage has after parsing RTP: (payload type, payload,
marker, timestamp) per packet of one SSRC, in arrival order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ..errors import DescriptionError
from .model import CodecSpec, MediaKind, StreamSpec
from .sdp import STATIC_PAYLOAD_TYPES

__all__ = ["Guess", "RtpSample", "classify_datagram", "guess_stream"]

OPUS_MIN_PACKETS = 5
_AGREEMENT = 0.8
# profile_idc values of H.264 (ITU-T H.264 7.4.2.1.1)
_H264_PROFILES = frozenset(
    {44, 66, 77, 83, 86, 88, 100, 110, 118, 122, 128, 134, 135, 138, 139, 144, 244}
)
_STUN_COOKIE = b"\x21\x12\xa4\x42"

_Evidence = tuple[str, dict[str, str]] | None
"""What a signature check found: a sentence for the note and fmtp parameters; None: no match."""


class RtpSample(NamedTuple):
    """One RTP packet of the stream being guessed (a plain 4-tuple works too)."""

    payload_type: int
    payload: bytes
    marker: bool
    timestamp: int


@dataclass(frozen=True, slots=True)
class Guess:
    """A guessed stream (kind and codecs; no port, SSRC only if given) and what was guessed
    from what, for the user: "ssrc 0x...: guessed video, PT 96 = vp8/90000 (...)"."""

    stream: StreamSpec
    note: str


def classify_datagram(data: bytes) -> Literal["rtp", "rtcp", "stun", "dtls", "other"]:
    """What a UDP payload is, by its first bytes (RFC 7983 demultiplexing, RFC 5761 for RTCP).

    RTP and RTCP need version 2 and their minimal lengths (12 and 8 bytes); STUN needs its
    magic cookie. Whatever a relay's port also carries (ICE, DTLS handshakes) is told apart.
    """
    if not data:
        return "other"
    first = data[0]
    if first <= 3:
        return "stun" if len(data) >= 20 and data[4:8] == _STUN_COOKIE else "other"
    if 20 <= first <= 63:
        return "dtls"
    if 128 <= first <= 191:
        if len(data) >= 8 and 192 <= data[1] <= 223:
            return "rtcp"
        if len(data) >= 12:
            return "rtp"
    return "other"


def guess_stream(
    samples: Sequence[tuple[int, bytes, bool, int]], *, ssrc: int | None = None
) -> Guess:
    """Guess the kind and codecs of one SSRC's packets; DescriptionError if any payload type
    cannot be recognised (or audio and video payload types are mixed)."""
    if not samples:
        raise DescriptionError("no RTP packets to guess a codec from", ssrc=ssrc)
    by_pt: dict[int, list[RtpSample]] = {}
    for sample in samples:
        by_pt.setdefault(sample[0], []).append(RtpSample(*sample))
    codecs: dict[int, CodecSpec] = {}
    kinds: dict[int, MediaKind] = {}
    notes = []
    for pt, packets in by_pt.items():
        kind, codec, evidence = _guess_payload_type(pt, packets, ssrc)
        codecs[pt] = codec
        kinds[pt] = kind
        channels = f"/{codec.channels}" if codec.channels > 1 else ""
        notes.append(f"PT {pt} = {codec.name}/{codec.clock_rate}{channels} ({evidence})")
    if len(set(kinds.values())) > 1:
        raise DescriptionError(
            "payload types of both audio and video in one stream: "
            + ", ".join(f"{pt} {kind}" for pt, kind in kinds.items()),
            ssrc=ssrc,
        )
    kind = next(iter(kinds.values()))
    who = f"ssrc {ssrc:#010x}: " if ssrc is not None else ""
    return Guess(
        StreamSpec(kind=kind, ssrcs=() if ssrc is None else (ssrc,), codecs=codecs),
        f"{who}guessed {kind}, " + "; ".join(notes),
    )


def _guess_payload_type(
    pt: int, packets: list[RtpSample], ssrc: int | None
) -> tuple[MediaKind, CodecSpec, str]:
    static = STATIC_PAYLOAD_TYPES.get(pt)
    if static is not None:
        return (
            static.kind,
            CodecSpec(pt, static.name, static.clock_rate, static.channels),
            f"static payload type {pt}, RFC 3551",
        )
    checks: list[tuple[MediaKind, str, int, int, Callable[[list[RtpSample]], _Evidence]]] = [
        ("video", "vp8", 90000, 1, _vp8),
        ("video", "vp9", 90000, 1, _vp9),
        ("video", "h264", 90000, 1, _h264),
        ("audio", "opus", 48000, 2, _opus),
    ]
    for kind, name, rate, channels, check in checks:
        found = check(packets)
        if found is not None:
            evidence, fmtp = found
            return kind, CodecSpec(pt, name, rate, channels, fmtp), evidence
    raise DescriptionError(
        f"payload type {pt} ({len(packets)} packets) looks like none of VP8, VP9, H.264, Opus; "
        "describe it in an SDP or a manifest",
        ssrc=ssrc,
    )


def _vp8_descriptor_length(p: bytes) -> int | None:
    """Length of a VP8 payload descriptor (RFC 7741 4.2), None if malformed or nothing after."""
    if not p or p[0] & 0x48:  # reserved bits
        return None
    pos = 1
    if p[0] & 0x80:
        if len(p) < 2 or p[1] & 0x0F:
            return None
        flags, pos = p[1], 2
        if flags & 0x80:  # I: picture id, 7 or 15 bits
            if len(p) <= pos:
                return None
            pos += 2 if p[pos] & 0x80 else 1
        pos += 1 if flags & 0x40 else 0  # L: TL0PICIDX
        pos += 1 if flags & 0x30 else 0  # T or K: TID/Y/KEYIDX
    return pos if pos < len(p) else None


def _vp8(packets: list[RtpSample]) -> _Evidence:
    keyframe: tuple[int, int, int] | None = None
    for i, packet in enumerate(packets):
        p = packet.payload
        start = _vp8_descriptor_length(p)
        if start is None:
            return None
        if p[0] & 0x17 != 0x10:  # not S=1 with partition 0: the middle of a frame
            continue
        body = p[start:]
        if (body[0] >> 1) & 0x07 > 3:  # frame tag version
            return None
        if body[0] & 0x01 == 0:  # P = 0: a key frame, which must carry the start code
            if len(body) < 10 or body[3:6] != b"\x9d\x01\x2a":
                return None
            if keyframe is None:
                width = int.from_bytes(body[6:8], "little") & 0x3FFF
                height = int.from_bytes(body[8:10], "little") & 0x3FFF
                keyframe = (i, width, height)
    if keyframe is None:
        return None
    i, width, height = keyframe
    return (
        f"VP8 payload descriptor on all {len(packets)} packets, keyframe start code "
        f"9d 01 2a in packet {i + 1}, {width}x{height}"
    ), {}


def _vp9_descriptor_length(p: bytes) -> int | None:
    """Length of a VP9 payload descriptor (RFC 9628 4.2), None if malformed or nothing after."""
    if not p:
        return None
    flags, pos = p[0], 1
    if flags & 0x80:  # I: picture id
        if len(p) <= pos:
            return None
        pos += 2 if p[pos] & 0x80 else 1
    if flags & 0x20:  # L: layer indices, plus TL0PICIDX in non-flexible mode
        pos += 1 if flags & 0x10 else 2
    if flags & 0x10 and flags & 0x40:  # F and P: up to 3 reference diffs, N bit chains them
        for _ in range(3):
            if len(p) <= pos:
                return None
            pos += 1
            if not p[pos - 1] & 0x01:
                break
        else:
            return None
    if flags & 0x02:  # V: scalability structure
        if len(p) <= pos:
            return None
        ss = p[pos]
        pos += 1
        if ss & 0x10:  # Y: a width and height per spatial layer
            pos += 4 * ((ss >> 5) + 1)
        if ss & 0x08:  # G: picture group description
            if len(p) <= pos:
                return None
            groups = p[pos]
            pos += 1
            for _ in range(groups):
                if len(p) <= pos:
                    return None
                pos += 1 + ((p[pos] >> 2) & 0x03)
    return pos if pos < len(p) else None


def _vp9_keyframe_size(frame: bytes) -> tuple[int, int] | None | Literal[False]:
    """Parse a VP9 uncompressed header: (width, height) for a keyframe, None for another frame,
    False if it is not a VP9 frame (wrong frame marker or sync code)."""
    bits = int.from_bytes(frame[:16], "big")
    total = 8 * min(len(frame), 16)
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        pos += n
        if pos > total:
            raise IndexError
        return (bits >> (total - pos)) & ((1 << n) - 1)

    try:
        if read(2) != 2:
            return False
        profile = read(1) | read(1) << 1
        if profile == 3:
            read(1)
        if read(1):  # show_existing_frame
            return None
        if read(1):  # frame_type 1: not a keyframe
            return None
        read(2)  # show_frame, error_resilient_mode
        if read(24) != 0x498342:
            return False
        if profile >= 2:
            read(1)  # ten_or_twelve_bit
        if read(3) != 7:  # color_space other than sRGB
            read(1)
            if profile in (1, 3):
                read(3)
        elif profile in (1, 3):
            read(1)
        return read(16) + 1, read(16) + 1
    except IndexError:
        return False


def _vp9(packets: list[RtpSample]) -> _Evidence:
    keyframe: tuple[int, int, int] | None = None
    for i, packet in enumerate(packets):
        p = packet.payload
        start = _vp9_descriptor_length(p)
        if start is None:
            return None
        if not p[0] & 0x08:  # B = 0: not the start of a frame
            continue
        size = _vp9_keyframe_size(p[start:])
        if size is False:
            return None
        if size is not None and keyframe is None:
            keyframe = (i, *size)
    if keyframe is None:
        return None
    i, width, height = keyframe
    return (
        f"VP9 payload descriptor on all {len(packets)} packets, keyframe sync code "
        f"49 83 42 in packet {i + 1}, {width}x{height}"
    ), {}


def _h264_nal_units(p: bytes) -> list[bytes] | None:
    """The NAL units (or an FU-A's first fragment, header rebuilt) of one H.264 RTP payload;
    [] for an FU-A continuation; None if the payload is not RFC 6184 as WebRTC sends it."""
    if not p or p[0] & 0x80:
        return None
    nal_type = p[0] & 0x1F
    if 1 <= nal_type <= 23:
        return [p]
    if nal_type == 24:  # STAP-A
        units, pos = [], 1
        while pos < len(p):
            if pos + 2 > len(p):
                return None
            size = int.from_bytes(p[pos : pos + 2], "big")
            unit = p[pos + 2 : pos + 2 + size]
            if size == 0 or len(unit) < size or unit[0] & 0x80 or not 1 <= unit[0] & 0x1F <= 23:
                return None
            units.append(unit)
            pos += 2 + size
        return units or None
    if nal_type == 28:  # FU-A
        if len(p) < 3 or p[1] & 0x20 or p[1] & 0xC0 == 0xC0 or not 1 <= p[1] & 0x1F <= 23:
            return None
        return [bytes([p[0] & 0xE0 | p[1] & 0x1F]) + p[2:]] if p[1] & 0x80 else []
    return None


def _h264(packets: list[RtpSample]) -> _Evidence:
    """Also fills fmtp: profile-level-id from the SPS, packetization-mode 1 if STAP-A or FU-A
    were seen (mode 0 allows single NAL units only)."""
    types: set[int] = set()
    sps: bytes | None = None
    for packet in packets:
        units = _h264_nal_units(packet.payload)
        if units is None:
            return None
        for unit in units:
            types.add(unit[0] & 0x1F)
            if sps is None and unit[0] & 0x1F == 7 and len(unit) >= 4:
                sps = unit
    if sps is None or sps[1] not in _H264_PROFILES:
        return None
    fmtp = {"profile-level-id": sps[1:4].hex()}
    if any(packet.payload[0] & 0x1F in (24, 28) for packet in packets):
        fmtp["packetization-mode"] = "1"
    return (
        f"H.264 NAL units on all {len(packets)} packets (types "
        f"{', '.join(map(str, sorted(types)))}), SPS profile {sps[1]} level {sps[3]}"
    ), fmtp


_OPUS_FRAME = [480, 960, 1920, 2880] * 3 + [480, 960] * 2 + [120, 240, 480, 960] * 4
"""Samples at 48 kHz of one frame, by TOC config (RFC 6716 3.1, table 2)."""


def _opus_duration(p: bytes) -> int | None:
    """Samples at 48 kHz in one Opus packet, None if its framing is invalid (RFC 6716 3.2)."""
    if not p:
        return None
    frame = _OPUS_FRAME[p[0] >> 3]
    code = p[0] & 0x03
    if code == 0:
        return frame
    if code == 1:
        return 2 * frame if (len(p) - 1) % 2 == 0 else None
    if code == 2:  # two frames, the first one's length coded in 1 or 2 bytes
        if len(p) >= 2 and p[1] < 252:
            first, used = p[1], 1
        elif len(p) >= 3:
            first, used = p[1] + 4 * p[2], 2
        else:
            return None
        return 2 * frame if first <= len(p) - 1 - used else None
    if len(p) < 2:  # code 3: a frame count byte, optional padding, then the frames
        return None
    count = p[1] & 0x3F
    if count == 0 or count * frame > 5760:  # at most 120 ms
        return None
    pos, padding = 2, 0
    while p[1] & 0x40:
        if pos >= len(p):
            return None
        padding += 254 if p[pos] == 255 else p[pos]
        pos += 1
        if p[pos - 1] != 255:
            break
    data = len(p) - pos - padding
    if data < 0 or (not p[1] & 0x80 and data % count):  # CBR frames share the bytes equally
        return None
    return count * frame


def _opus(packets: list[RtpSample]) -> _Evidence:
    if len(packets) < OPUS_MIN_PACKETS:
        return None
    durations = []
    for packet in packets:
        duration = _opus_duration(packet.payload)
        if duration is None:
            return None
        durations.append(duration)
    common, count = Counter(durations).most_common(1)[0]
    if count < _AGREEMENT * len(packets):
        return None
    steps = [
        ((b.timestamp - a.timestamp) % 2**32, d) for a, b, d in zip(packets, packets[1:], durations)
    ]
    whole = sum(1 for step, d in steps if 0 < step < 2**31 and step % d == 0)
    if whole < _AGREEMENT * len(steps):
        return None
    return (
        f"Opus TOC valid on all {len(packets)} packets, {common / 48:g} ms frames in "
        f"{count} of them, timestamps step by whole frames at 48 kHz in {whole} of "
        f"{len(steps)}"
    ), {}
