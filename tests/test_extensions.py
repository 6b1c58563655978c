"""RFC 8285 header extensions carrying the RFC 6464 audio level, read through scan_room.

Each case writes a small pcap of Opus packets whose extension blocks are built byte by byte
here (one-byte form, profile 0xBEDE; two-byte form, profile 0x100 + 4 appbits), with other
extensions before and after the audio level and padding between them, and checks the level of
every frame handed to on_frame and the stream's count of packets that carried one. Only public
entry points are used (load_description, scan_room), so the tests hold whatever room.py's
internals become.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from skymix.session import load_description
from skymix.streams.room import scan_room
from skymix.synth import PcapWriter

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
SSRC, PT, PORT = 0x5EED0001, 111, 40000
SENDER, RELAY = ("10.0.0.1", 5004), ("127.0.0.1", PORT)
START_NS = 1_750_000_000 * 1_000_000_000
OPUS = b"\xfc\xff\xfe"  # CELT fullband 20 ms, one frame of 2 bytes: 960 samples
PACKETS = 24

Element = tuple[int, bytes]  # (extension id, value)


def one_byte_block(elements: list[Element | int]) -> bytes:
    """RFC 8285 §4.2 elements: ID and L (length - 1) in one byte, then the value; an int in
    ``elements`` is that many padding bytes (0) at that place."""
    out = b""
    for e in elements:
        if isinstance(e, int):
            out += bytes(e)
        else:
            ext_id, value = e
            if not (1 <= ext_id <= 14 and 1 <= len(value) <= 16):  # the test's own input
                raise ValueError(f"no one-byte element: id {ext_id}, {len(value)} bytes")
            out += bytes([ext_id << 4 | (len(value) - 1)]) + value
    return out


def two_byte_block(elements: list[Element | int]) -> bytes:
    """RFC 8285 §4.3 elements: ID byte, length byte (0 allowed), value; ints are padding."""
    out = b""
    for e in elements:
        if isinstance(e, int):
            out += bytes(e)
        else:
            ext_id, value = e
            if not (1 <= ext_id <= 255 and len(value) <= 255):  # the test's own input
                raise ValueError(f"no two-byte element: id {ext_id}, {len(value)} bytes")
            out += bytes([ext_id, len(value)]) + value
    return out


def rtp(seq: int, block: bytes | None, profile: int) -> bytes:
    """An Opus RTP packet; with a block, X=1 and the block zero-padded to 32-bit words."""
    header = struct.pack(
        "!BBHII", 0x80 | (0x10 if block is not None else 0), PT, seq, seq * 960, SSRC
    )
    if block is None:
        return header + OPUS
    block += bytes(-len(block) % 4)
    return header + struct.pack("!HH", profile, len(block) // 4) + block + OPUS


def level_byte(level: int, voice: bool) -> bytes:
    """RFC 6464 §3: V (voice activity) in the top bit, the level in -dBov below it."""
    return bytes([0x80 * voice | level])


def scan(tmp_path: Path, packets: list[bytes], extmap: dict[int, str]):
    """(the audio frames' levels in order, the stream report) of one participant's capture."""
    pcap, sdp = tmp_path / "call.pcap", tmp_path / "ann.sdp"
    with PcapWriter(pcap) as writer:
        for n, data in enumerate(packets):
            writer.write(START_NS + n * 20_000_000, SENDER, RELAY, data)
    sdp.write_text(
        "\r\n".join(
            [
                "v=0",
                "o=- 0 0 IN IP4 10.0.0.1",
                "s=ann",
                "c=IN IP4 127.0.0.1",
                "t=0 0",
                f"m=audio {PORT} RTP/AVP {PT}",
                f"a=rtpmap:{PT} opus/48000/2",
                *[f"a=extmap:{i} {uri}" for i, uri in extmap.items()],
                f"a=ssrc:{SSRC} cname:ann",
            ]
        )
        + "\r\n"
    )
    levels: list[int | None] = []

    def keep(participant: str, kind: str, frame) -> None:
        assert (participant, kind) == ("ann", "audio")
        levels.append(frame.audio_level)

    result = scan_room([pcap], load_description([f"ann={sdp}"]), on_frame=keep)
    assert not result.problems and not result.skipped
    (ann,) = result.participants
    (report,) = ann.streams
    assert report.total("frames") == len(packets)
    return levels, report


def expected_levels() -> list[tuple[int, bool] | None]:
    """Per packet: (level, voice) to send, or None for a packet without an audio level.

    Levels run over the whole range 0..127 (0 loudest), V alternates; packets 5 and 17 carry no
    level (17 has no extension block at all)."""
    return [None if n in (5, 17) else ((n * 37) % 128, n % 2 == 0) for n in range(PACKETS)]


Builder = Callable[[int, bytes | None], tuple[bytes | None, int]]
"""(packet number, audio level element value or None) -> (extension block or None, profile)."""


def one_byte(level_id: int, before: list[Element | int], after: list[Element | int]) -> Builder:
    def build(n: int, level: bytes | None) -> tuple[bytes | None, int]:
        if n == 17:
            return None, 0
        middle: list[Element | int] = [(level_id, level)] if level is not None else []
        return one_byte_block(before + middle + after), 0xBEDE

    return build


def two_byte(
    level_id: int, before: list[Element | int], after: list[Element | int], appbits: int = 0
) -> Builder:
    def build(n: int, level: bytes | None) -> tuple[bytes | None, int]:
        if n == 17:
            return None, 0
        middle: list[Element | int] = [(level_id, level)] if level is not None else []
        return two_byte_block(before + middle + after), 0x1000 | appbits

    return build


UNKNOWN_URI = "urn:example:params:rtp-hdrext:not-read-by-skymix"

CASES = {
    # (a) one-byte form, the audio level alone
    "one-byte": (one_byte(1, [], []), {1: AUDIO_LEVEL_URI}),
    # (b) two-byte form (profile 0x1000, appbits 0), the audio level alone, at an id above 14
    "two-byte": (two_byte(100, [], []), {100: AUDIO_LEVEL_URI}),
    # (c) unknown extensions before and after: one declared with a URI nobody reads (2), one not
    # declared at all (7, 12); in the two-byte form also an empty element and ids above 14
    "one-byte, others around": (
        one_byte(3, [(2, b"\xaa\xbb"), (7, b"\x01")], [(12, bytes(range(16)))]),
        {2: UNKNOWN_URI, 3: AUDIO_LEVEL_URI},
    ),
    "two-byte, others around": (
        two_byte(20, [(2, b"\xaa\xbb\xcc"), (200, b"")], [(21, bytes(range(40))), (1, b"\x09")]),
        {2: UNKNOWN_URI, 20: AUDIO_LEVEL_URI},
    ),
    # (d) padding bytes (0) before, between and after the elements
    "one-byte, padding": (
        one_byte(1, [2, (4, b"\x10\x20\x30"), 1], [3, (6, b"\x77"), 2]),
        {1: AUDIO_LEVEL_URI},
    ),
    "two-byte, padding": (
        two_byte(1, [1, (30, b"\x10\x20"), 3], [2, (31, b""), 1]),
        {1: AUDIO_LEVEL_URI},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_audio_level_reaches_frames(tmp_path, case):
    build, extmap = CASES[case]
    sent = expected_levels()
    packets = []
    for n, level in enumerate(sent):
        value = level_byte(*level) if level is not None else None
        block, profile = build(n, value)
        packets.append(rtp(1000 + n, block, profile))
    levels, report = scan(tmp_path, packets, extmap)
    assert levels == [lv[0] if lv is not None else None for lv in sent]
    assert report.audio_levels == PACKETS - 2


@pytest.mark.parametrize("appbits", [0x1, 0xA, 0xF])
def test_two_byte_form_with_appbits(tmp_path, appbits):
    build = two_byte(20, [(2, b"\xaa")], [(200, b"\x01\x02")], appbits=appbits)
    sent = expected_levels()
    packets = [
        rtp(1000 + n, *build(n, level_byte(*lv) if lv is not None else None))
        for n, lv in enumerate(sent)
    ]
    levels, report = scan(tmp_path, packets, {2: UNKNOWN_URI, 20: AUDIO_LEVEL_URI})
    assert levels == [lv[0] if lv is not None else None for lv in sent]
    assert report.audio_levels == PACKETS - 2


def test_reserved_id_15_ends_the_one_byte_list(tmp_path):
    # RFC 8285 §4.2: on id 15 "processing of the entire extension should terminate"; its length
    # nibble means nothing, so a level after it is not read and the packet is not malformed
    packets = [rtp(1000 + n, bytes([0xF7, 0x10 | 0, n]) + b"\x00", 0xBEDE) for n in range(PACKETS)]
    levels, report = scan(tmp_path, packets, {1: AUDIO_LEVEL_URI})
    assert levels == [None] * PACKETS and report.audio_levels == 0
    before = [rtp(1000 + n, bytes([0x10, n, 0xF0, 0x00]), 0xBEDE) for n in range(PACKETS)]
    levels, report = scan(tmp_path, before, {1: AUDIO_LEVEL_URI})
    assert levels == list(range(PACKETS)) and report.audio_levels == PACKETS


def test_no_extmap_no_levels(tmp_path):
    # the SDP declares no audio level: the same bytes are not read as one
    build = one_byte(1, [], [])
    packets = [
        rtp(1000 + n, *build(n, level_byte(*lv) if lv is not None else None))
        for n, lv in enumerate(expected_levels())
    ]
    levels, report = scan(tmp_path, packets, {1: UNKNOWN_URI})
    assert levels == [None] * PACKETS and report.audio_levels == 0


@pytest.mark.parametrize("form, value", [("one-byte", b"\x05\x06"), ("two-byte", b"")])
def test_audio_level_of_wrong_length_does_not_end_the_scan(tmp_path, form, value):
    # RFC 6464 §3 gives the level 1 byte; a sender (or a damaged packet) giving 2, or 0 in the
    # two-byte form, may cost that packet its level (or be read by its first byte), never the
    # scan. (aiortc 1.16's HeaderExtensionsMap.get raises struct.error, not a ValueError, on it.)
    build = (one_byte if form == "one-byte" else two_byte)(1, [], [])
    packets = [
        rtp(1000 + n, *build(n, value if n == 3 else level_byte(n, False))) for n in range(PACKETS)
    ]
    levels, report = scan(tmp_path, packets, {1: AUDIO_LEVEL_URI})
    sent = [None if n == 17 else n for n in range(PACKETS)]  # 17 has no extension block
    assert levels[:3] == sent[:3] and levels[4:] == sent[4:]
    assert levels[3] in (None, *value[:1])
    assert report.audio_levels == PACKETS - 2 + (levels[3] is not None)
