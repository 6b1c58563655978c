"""The batch code of ingest against the per-packet references it replaced.

skymix.streams.rtpbatch parses a whole DatagramBatch with array operations; every answer it gives
must be the one the per-packet code gives for that packet: aiortc's ``RtpPacket.parse`` (fields,
payload, refusals and their text), aiortc's ``HeaderExtensionsMap`` (audio level), the codecs'
``starts_frame``/``depayload``/``frame_info``, aiortc's ``RtcpPacket.parse`` (sender reports).
The unwrappers' ``batch`` must equal calling them value by value, and StreamAssembler.push_batch
must equal one push() per packet, frames and statistics, on real VP8 and Opus streams impaired
(dropped, repeated, swapped, delayed packets, jittered arrival) and cut into random batches.

Two deliberate deviations from aiortc are checked against ``rfc8285_elements`` (the RFC as
skymix reads it) instead: two-byte profiles 0x1001-0x100F ("appbits", RFC 8285 §4.3) are walked
as two-byte blocks (aiortc leaves them unread), and a one-byte element with id 15 ends the
element list (RFC 8285 §4.2; aiortc reads on).
"""

from __future__ import annotations

import struct
from fractions import Fraction
from functools import cache

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
)
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from skymix.errors import CaptureError
from skymix.ingest.batch import batches_of
from skymix.ingest.records import Datagram
from skymix.session.detect import classify_datagram
from skymix.streams.assembler import (
    SequenceUnwrapper,
    StreamAssembler,
    TimestampUnwrapper,
)
from skymix.streams.codecs import H264, FrameInfo, Opus, Pcma, Pcmu, Vp8, Vp9
from skymix.streams.rtpbatch import (
    VECTOR_ELEMENTS,
    audio_levels,
    payload_layout,
    sender_reports,
    split_batch,
)
from test_assembler import vp8_stream

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


# ------------------------------------------------------------------ RTP datagrams, by structure


def rfc8285_elements(profile: int, value: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """(elements, truncated) of an extension block as RFC 8285 reads it: padding bytes skipped,
    two-byte form for 0x1000-0x100F (appbits), a one-byte id 15 ends the list (§4.2)."""
    if profile == 0xBEDE:
        two = False
    elif profile & 0xFFF0 == 0x1000:
        two = True
    else:
        return [], False
    out, pos, end = [], 0, len(value)
    while pos < end:
        if value[pos] == 0:
            pos += 1
            continue
        if two:
            if pos + 2 > end:
                return out, True
            ident, size, head = value[pos], value[pos + 1], 2
        else:
            ident, size, head = value[pos] >> 4, (value[pos] & 0x0F) + 1, 1
            if ident == 15:
                return out, False
        if pos + head + size > end:
            return out, True
        out.append((ident, value[pos + head : pos + head + size]))
        pos += head + size
    return out, False


def extension_block(data: bytes) -> tuple[int, int, int] | None:
    """(profile, start, end) of a well-framed RTP datagram's extension block, None if it has
    none or the header does not reach it."""
    if len(data) < 12 or not data[0] & 0x10:
        return None
    pos = 12 + 4 * (data[0] & 0x0F)
    if len(data) < pos + 4:
        return None
    profile, words = struct.unpack_from("!HH", data, pos)
    if len(data) < pos + 4 + 4 * words:
        return None
    return profile, pos + 4, pos + 4 + 4 * words


def deviates(data: bytes) -> bool:
    """Whether skymix deliberately reads this datagram's extension block unlike aiortc."""
    block = extension_block(data)
    if block is None:
        return False
    profile, start, end = block
    if 0x1001 <= profile <= 0x100F:
        return True
    if profile != 0xBEDE:
        return False
    pos = start
    while pos < end:  # the one-byte walk up to an id 15 (or the first truncated element)
        byte = data[pos]
        if byte == 0:
            pos += 1
            continue
        if byte >> 4 == 15:
            return True
        pos += 1 + (byte & 0x0F) + 1
    return False


@st.composite
def extension_elements(
    draw, two: bool, ids: st.SearchStrategy[int] | None = None, max_size: int = 20
) -> bytes:
    """An element list with padding runs; its ids from ids (default 1-14 / 1-255)."""
    ids = (st.integers(1, 255) if two else st.integers(1, 14)) if ids is None else ids
    items = draw(
        st.lists(
            st.one_of(
                st.integers(1, 9),  # padding bytes
                st.tuples(ids, st.binary(min_size=0 if two else 1, max_size=18 if two else 16)),
            ),
            max_size=max_size,
        )
    )
    out = b""
    for item in items:
        if isinstance(item, int):
            out += bytes(item)
        elif two:
            out += bytes([item[0], len(item[1])]) + item[1]
        else:
            out += bytes([item[0] << 4 | (len(item[1]) - 1)]) + item[1]
    return out


@st.composite
def extension_blocks(draw) -> tuple[int, bytes]:
    """(profile, block) with a length field that fits: one-byte, two-byte (rarely with appbits),
    unknown profiles, sometimes an id 15, sometimes cut inside an element."""
    kind = draw(st.sampled_from(["one", "one", "two", "two", "appbits", "other", "id15"]))
    if kind == "other":
        profile = draw(
            st.integers(0, 0xFFFF).filter(lambda p: p != 0xBEDE and p & 0xFFF0 != 0x1000)
        )
        body = draw(st.binary(max_size=24))
    elif kind in ("one", "id15"):
        profile = 0xBEDE
        body = draw(extension_elements(False))
        if kind == "id15":
            body += bytes([0xF0 | draw(st.integers(0, 15))]) + draw(st.binary(max_size=20))
    else:
        profile = 0x1000 if kind == "two" else draw(st.integers(0x1001, 0x100F))
        body = draw(extension_elements(True))
    if body and draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body) - 1))]  # cut, maybe inside an element
    body += bytes(-len(body) % 4)
    return profile, body


@st.composite
def rtp_datagrams(draw) -> bytes:
    """A version 2 RTP packet: CSRCs, maybe an extension block, maybe RTP padding (with a valid
    or invalid count), a payload; then maybe truncated or with some bytes overwritten."""
    cc = draw(st.integers(0, 15))
    ext = draw(st.none() | extension_blocks())
    payload = draw(st.binary(max_size=40))
    padding = draw(st.none() | st.integers(0, 12))
    head = struct.pack(
        "!BBHII",
        0x80 | (padding is not None) << 5 | (ext is not None) << 4 | cc,
        draw(st.integers(0, 255)),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFFFFFF)),
        draw(st.integers(0, 0xFFFFFFFF)),
    )
    head += draw(st.binary(min_size=4 * cc, max_size=4 * cc))
    if ext is not None:
        profile, block = ext
        words = len(block) // 4
        if draw(st.integers(0, 9)) == 0:  # a length field beyond the datagram
            words += draw(st.integers(1, 4))
        head += struct.pack("!HH", profile, words) + block
    data = head + payload
    if padding is not None:
        if padding and draw(st.booleans()):  # count = the bytes it ends, valid
            data += bytes(padding - 1) + bytes([padding])
        else:  # any count: 0 or more than there is makes it invalid
            data += bytes([draw(st.integers(0, 255))])
    damage = draw(st.sampled_from(["none", "none", "none", "cut", "bytes"]))
    if damage == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "bytes" and data:
        changed = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            changed[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        data = bytes(changed)
    return data


other_datagrams = st.one_of(
    st.binary(max_size=30),  # anything, mostly short or not version 2
    st.builds(
        lambda t, n, rest: bytes([t, 0]) + n + b"\x21\x12\xa4\x42" + rest,  # STUN
        st.integers(0, 3),
        st.binary(min_size=2, max_size=2),
        st.binary(max_size=20),
    ),
    st.builds(lambda t, rest: bytes([t]) + rest, st.integers(20, 63), st.binary(max_size=30)),
    st.builds(
        lambda f, s, rest: bytes([f, s]) + rest,  # RTCP on the RTP port (RFC 5761)
        st.integers(128, 191),
        st.integers(192, 223),
        st.binary(max_size=30),
    ),
)


def batch_of(datagrams: list[bytes]):
    (batch,) = batches_of(
        [Datagram(1000 * i, d, None, None, "f", 24 + 100 * i) for i, d in enumerate(datagrams)], "f"
    )
    return batch


def aiortc_parse(data: bytes) -> RtpPacket | str:
    try:
        return RtpPacket.parse(data)
    except ValueError as exc:
        return str(exc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(rtp_datagrams(), rtp_datagrams(), other_datagrams), min_size=1, max_size=30)
)
def test_split_batch_agrees_with_aiortc(datagrams):
    assume(any(datagrams))  # see test_split_batch_of_empty_datagrams_only
    batch = batch_of(datagrams)
    split = split_batch(batch)
    rtp = split.rtp
    columns = {row: k for k, row in enumerate(rtp.rows.tolist())}
    malformed = dict(split.malformed)
    other = dict(split.other)
    assert len(columns) + len(malformed) + len(other) + len(split.rtcp) == len(datagrams)
    assert list(columns) == sorted(columns) and split.rtcp == sorted(split.rtcp)
    for i, data in enumerate(datagrams):
        kind = classify_datagram(data)
        if kind == "rtcp":
            assert i in split.rtcp
            continue
        if kind != "rtp":
            assert other[i] == kind
            continue
        assert i not in other and i not in split.rtcp
        parsed = aiortc_parse(data)
        block = extension_block(data)
        elements, truncated = rfc8285_elements(
            *((block[0], data[block[1] : block[2]]) if block else (0, b""))
        )
        message = parsed if isinstance(parsed, str) else "malformed RTP header extension"
        event(
            f"{'deviates, ' if deviates(data) else ''}{'truncated list, ' if truncated else ''}"
            f"{'refused' if isinstance(parsed, str) else 'parsed'}"
        )
        if block and len(elements) > VECTOR_ELEMENTS:
            event("more elements than VECTOR_ELEMENTS")
        if deviates(data):
            # the RFC reading: refused for a truncated element list, else as aiortc refuses or
            # parses the datagram with its element list blanked out (all padding)
            if truncated:
                assert malformed.get(i) == message, data.hex()
                continue
            _, start, end = block
            parsed = aiortc_parse(data[:start] + bytes(end - start) + data[end:])
            if isinstance(parsed, str):
                assert malformed.get(i) == message, data.hex()
                continue
        elif not isinstance(parsed, str):
            assert not truncated  # the reference reads what aiortc reads
        if isinstance(parsed, str):
            assert malformed.get(i) == parsed, (data.hex(), parsed)
            continue
        assert i in columns, (data.hex(), malformed.get(i))
        k = columns[i]
        s = int(batch.start[i])
        assert bool(rtp.marker[k]) == bool(parsed.marker)
        assert (
            int(rtp.payload_type[k]),
            int(rtp.seq[k]),
            int(rtp.timestamp[k]),
            int(rtp.ssrc[k]),
        ) == (parsed.payload_type, parsed.sequence_number, parsed.timestamp, parsed.ssrc)
        assert batch.buf[rtp.payload_start[k] : rtp.payload_end[k]] == parsed.payload
        if block is None:
            assert rtp.ext_profile[k] == -1
            assert (rtp.ext_ids[:, k] == -1).all()
        else:
            assert (rtp.ext_profile[k], rtp.ext_start[k] - s, rtp.ext_end[k] - s) == block
            want = elements[:VECTOR_ELEMENTS]
            ids = [ident for ident, _ in want]
            values = [value[0] if value else -1 for _, value in want]
            got = rtp.ext_ids[:, k].tolist()  # as many slots as the batch's longest list
            assert got[: len(ids)] == ids and set(got[len(ids) :]) <= {-1}
            assert rtp.ext_values[: len(want), k].tolist() == values


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(rtp_datagrams(), other_datagrams), min_size=1, max_size=20))
def test_split_batch_rtp_only_takes_every_version_2_datagram_as_rtp(datagrams):
    assume(any(datagrams))
    split = split_batch(batch_of(datagrams), rtp_only=True)
    assert split.rtcp == []
    parsed_rows = set(split.rtp.rows.tolist()) | {i for i, _ in split.malformed}
    for i, data in enumerate(datagrams):
        is_rtp = len(data) >= 12 and 128 <= data[0] <= 191
        assert (i in parsed_rows) == is_rtp
        if is_rtp and not deviates(data):
            parsed = aiortc_parse(data)
            assert (i in dict(split.malformed)) == isinstance(parsed, str)


# ------------------------------------------------------------------------------ audio levels


def level_map(ext_id: int) -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=ext_id, uri=AUDIO_LEVEL_URI)]
        )
    )
    return extensions


@st.composite
def level_packets(draw, ext_id: int) -> bytes:
    """RTP packets whose extension block may carry ext_id among other elements."""
    two = draw(st.booleans())
    profile = draw(st.sampled_from([0x1000, 0x1000, 0x1003])) if two else 0xBEDE
    ids = st.integers(1, 255 if two else 14)
    before = draw(extension_elements(two, ids.filter(lambda x: x != ext_id), max_size=40))
    after = draw(extension_elements(two, ids.filter(lambda x: x != ext_id)))
    level = b""
    if draw(st.integers(0, 3)):
        value = draw(
            st.binary(min_size=1, max_size=1) | st.binary(min_size=0 if two else 1, max_size=3)
        )
        level = (
            bytes([ext_id, len(value)]) + value
            if two
            else bytes([ext_id << 4 | (len(value) - 1)]) + value
        )
    block = before + level + after
    block += bytes(-len(block) % 4)
    return (
        struct.pack("!BBHII", 0x90, 111, 1, 2, 3)
        + struct.pack("!HH", profile, len(block) // 4)
        + block
        + b"\xfc\xff\xfe"
    )


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 14).flatmap(
        lambda ext_id: st.tuples(
            st.just(ext_id), st.lists(level_packets(ext_id), min_size=1, max_size=12)
        )
    )
)
def test_audio_levels_agree_with_aiortc(case):
    ext_id, packets = case
    split = split_batch(batch_of(packets))
    assert split.malformed == [] and len(split.rtp) == len(packets)
    levels = audio_levels(split.rtp, ext_id).tolist()
    extensions = level_map(ext_id)
    for data, level in zip(packets, levels):
        profile, start, end = extension_block(data)
        elements, _ = rfc8285_elements(profile, data[start:end])
        values = [value for ident, value in elements if ident == ext_id]
        if [ident for ident, _ in elements].index(ext_id) >= VECTOR_ELEMENTS if values else False:
            event("level element beyond VECTOR_ELEMENTS")
            continue  # see test_audio_level_after_sixteen_elements
        if not values:
            assert level == -1
        elif len(values[0]) == 1:
            if profile & 0xFFF0 == 0x1000 and profile != 0x1000:
                assert level == values[0][0] & 0x7F  # appbits: aiortc reads no elements
            else:
                assert level == extensions.get(profile, data[start:end]).audio_level[1]


def test_audio_level_after_sixteen_elements():
    """aiortc finds the level wherever it is in the list; the batch columns keep 16 elements."""
    block = b"".join(bytes([ident, 1, 0x40]) for ident in range(20, 36)) + bytes([5, 1, 0x2A])
    block += bytes(-len(block) % 4)
    data = (
        struct.pack("!BBHII", 0x90, 111, 1, 2, 3)
        + struct.pack("!HH", 0x1000, len(block) // 4)
        + block
        + b"\xfc\xff\xfe"
    )
    assert level_map(5).get(0x1000, block).audio_level == (False, 42)
    assert audio_levels(split_batch(batch_of([data])).rtp, 5).tolist() == [42]


def test_split_batch_of_empty_datagrams_only():
    """A batch may hold only empty UDP datagrams (the last batch of a capture ending in a
    keepalive); they are "other", as classify_datagram says."""
    split = split_batch(batch_of([b"", b""]))
    assert list(split.other) == [(0, "other"), (1, "other")] and len(split.rtp) == 0


# ---------------------------------------------------------------------------- payload layout


@st.composite
def vp8_payloads(draw) -> bytes:
    """RFC 7741 §4.2 descriptors with any of X, I (7 or 15 bits), L, T, K, then data whose
    first byte says key or delta frame; sometimes cut anywhere."""
    s, n, r = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    pid = draw(st.sampled_from([0, 0]) | st.integers(0, 7))
    i, l_, t, k = (draw(st.booleans()) for _ in range(4))
    x = draw(st.booleans()) and (i or l_ or t or k or draw(st.booleans()))
    out = bytes([x << 7 | r << 6 | n << 5 | s << 4 | pid])
    if x:
        out += bytes([i << 7 | l_ << 6 | t << 5 | k << 4 | draw(st.integers(0, 15))])
        if i:
            out += (
                draw(st.binary(min_size=2, max_size=2))
                if draw(st.booleans())
                else bytes([draw(st.integers(0, 127))])
            )
            if len(out) > 3 and not out[2] & 0x80:  # a 15-bit id has its M bit set
                out = out[:2] + bytes([out[2] | 0x80]) + out[3:]
        if l_:
            out += draw(st.binary(min_size=1, max_size=1))
        if t or k:
            out += draw(st.binary(min_size=1, max_size=1))
    out += draw(st.binary(max_size=12))
    if draw(st.integers(0, 4)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return out


@st.composite
def h264_payloads(draw) -> bytes:
    """Single NAL units (types 1-23, 5 and 1 often), FU-A with any S/E bits and inner type,
    STAP-A, and the types refused (0, 25-27, 29-31); sometimes cut."""
    nri = draw(st.integers(0, 3)) << 5
    kind = draw(st.sampled_from(["single", "single", "fu", "fu", "stap", "bad"]))
    if kind == "single":
        nal = draw(st.sampled_from([1, 1, 1, 5, 7, 8]) | st.integers(1, 23))
        out = bytes([nri | nal])
    elif kind == "fu":
        se = draw(st.sampled_from([0x80, 0x40, 0x00, 0xC0]))
        inner = draw(st.sampled_from([1, 1, 5]) | st.integers(0, 31))
        out = bytes([nri | 28, se | draw(st.integers(0, 1)) << 5 | inner])
    elif kind == "stap":
        out = bytes([nri | 24])
        for unit in draw(st.lists(st.binary(min_size=1, max_size=6), max_size=3)):
            out += struct.pack("!H", len(unit)) + unit
    else:
        out = bytes([nri | draw(st.sampled_from([0, 25, 26, 27, 29, 30, 31]))])
    out += draw(st.binary(max_size=12))
    if draw(st.integers(0, 4)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return out


@st.composite
def opus_payloads(draw) -> bytes:
    """TOC bytes of codes 0-3 and frame bodies of the right and wrong length, up to 2 x 1275+."""
    toc = draw(st.integers(0, 31)) << 3 | draw(st.integers(0, 1)) << 2 | draw(st.integers(0, 3))
    size = draw(
        st.sampled_from([0, 1, 2, 3, 1274, 1275, 1276, 2550, 2551, 2552]) | st.integers(0, 40)
    )
    return (
        bytes([toc])
        + draw(st.binary(min_size=min(size, 8), max_size=min(size, 8)))
        + bytes(max(0, size - 8))
    )


CODECS = {
    "VP8": (Vp8(), vp8_payloads()),
    "H264": (H264(), h264_payloads()),
    "opus": (Opus(), opus_payloads()),
    "PCMU": (Pcmu(), st.binary(max_size=20)),
    "PCMA": (Pcma(), st.binary(max_size=20)),
}


def no_start_code(payload: bytes) -> bool:
    """No Annex-B start code inside the payload: a real NAL unit has emulation prevention
    (H.264 §7.4.1), so frame_info finds only the start codes the depayloader puts."""
    return b"\x00\x00\x01" not in payload


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(CODECS)).flatmap(
        lambda name: st.tuples(
            st.just(name),
            st.lists(
                st.tuples(
                    st.one_of(CODECS[name][1], st.binary(max_size=16)), st.binary(max_size=3)
                ),
                min_size=1,
                max_size=25,
            ),
        )
    )
)
def test_payload_layout_agrees_with_the_codec(case):
    """Payloads lie in one buffer with other bytes between them (the rest of each datagram), so
    a read past a payload's end sees data, not zeros."""
    name, items = case
    codec = CODECS[name][0]
    buf, starts, ends = b"", [], []
    for payload, gap in items:
        buf += gap
        starts.append(len(buf))
        buf += payload
        ends.append(len(buf))
    buf += b"\xff"  # a read past the last payload must not be what decides
    layout = payload_layout(
        codec, np.frombuffer(buf, np.uint8), np.array(starts, np.int64), np.array(ends, np.int64)
    )
    for i, (p, _) in enumerate(items):
        at = int(layout.data_start[i])
        if at < 0:
            event(f"{name}: refused")
            if name == "H264" and p and p[0] & 0x1F == 24:
                continue  # STAP-A: left to the per-packet depayloader
            with pytest.raises(CaptureError):
                codec.depayload(p)
            continue
        prefix = layout.prefix[i] if layout.prefix is not None else b""
        data = codec.depayload(p)
        assert data == prefix + p[at:], (name, p.hex())
        assert bool(layout.starts[i]) == codec.starts_frame(p), (name, p.hex())
        if layout.simple[i] and layout.starts[i]:
            event(f"{name}: simple")
            if name == "H264" and not no_start_code(p):
                continue
            info = codec.frame_info(data, p)
            if codec.kind == "audio":
                # the batch skips the duration and DTX flag: no caller of the layout reads them
                info = FrameInfo(info.keyframe, info.width, info.height)
            assert info == layout.simple_info, (name, p.hex())
        elif layout.starts[i]:
            event(f"{name}: starts, not simple")


@pytest.mark.parametrize("codec", [Vp8(), H264(), Opus()], ids=repr)
def test_payload_layout_of_an_empty_buffer(codec):
    layout = payload_layout(
        codec, np.frombuffer(b"", np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int64)
    )
    assert layout.data_start.tolist() == [-1]
    with pytest.raises(CaptureError):
        codec.depayload(b"")


@pytest.mark.parametrize(
    "codec, payload, message",
    [
        (Vp8(), b"\x10", "VP8 payload has no data after its descriptor"),  # S=1, PID=0, no data
        (H264(), b"\x7c\x85", "H.264 FU-A is truncated (2 bytes, needs 3)"),  # FU-A, S=1
    ],
    ids=["vp8", "h264"],
)
def test_a_frame_start_the_codec_refuses_is_malformed(codec, payload, message):
    """codec.starts_frame(payload) is True and codec.depayload(payload) raises: the frame is
    malformed, as it is for VP9 (b"\x08": B=1, no data), which has no batch layout."""
    assert codec.starts_frame(payload)
    with pytest.raises(CaptureError, match=message.replace("(", r"\(").replace(")", r"\)")):
        codec.depayload(payload)
    asm = StreamAssembler(codec, 1, window_ns=0)
    assert asm.push(0, 1, 0, True, payload) + asm.flush() == []
    assert (asm.stats.malformed, asm.stats.incomplete_frames) == (1, 0)
    assert [str(p) for p in asm.stats.problems] == [f"ssrc 0x00000001, seq 1: {message}"]


def test_payload_layout_is_none_for_per_packet_codecs():
    b = np.frombuffer(b"\x88\x00\x01", np.uint8)
    assert payload_layout(Vp9(), b, np.array([0]), np.array([3])) is None


# ----------------------------------------------------------------------------- sender reports

u32 = st.integers(0, 0xFFFFFFFF)
receiver_infos = st.builds(
    RtcpReceiverInfo,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    packets_lost=st.integers(-(1 << 23), (1 << 23) - 1),
    highest_sequence=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
rtcp_packets = st.one_of(
    st.builds(
        RtcpSrPacket,
        ssrc=u32,
        sender_info=st.builds(
            RtcpSenderInfo,
            ntp_timestamp=st.integers(0, 2**64 - 1),
            rtp_timestamp=u32,
            packet_count=u32,
            octet_count=u32,
        ),
        reports=st.lists(receiver_infos, max_size=2),
    ),
    st.builds(RtcpRrPacket, ssrc=u32, reports=st.lists(receiver_infos, max_size=2)),
    st.builds(
        RtcpSdesPacket,
        chunks=st.lists(
            st.builds(
                RtcpSourceInfo,
                ssrc=u32,
                items=st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=12)), max_size=2),
            ),
            max_size=2,
        ),
    ),
    st.builds(RtcpByePacket, sources=st.lists(u32, max_size=3)),
)


def aiortc_reports(data: bytes) -> list[tuple[int, int, int]] | str:
    try:
        packets = RtcpPacket.parse(data)
    except ValueError as exc:
        return str(exc)
    return [
        (p.ssrc, p.sender_info.ntp_timestamp, p.sender_info.rtp_timestamp)
        for p in packets
        if isinstance(p, RtcpSrPacket)
    ]


def skymix_reports(data: bytes) -> list[tuple[int, int, int]] | str:
    try:
        return sender_reports(data)
    except ValueError as exc:
        return str(exc)


@settings(max_examples=300, deadline=None)
@given(st.lists(rtcp_packets, min_size=1, max_size=5), st.data())
def test_sender_reports_agree_with_aiortc(packets, data):
    compound = b""
    for p in packets:
        raw = bytes(p)
        words = data.draw(st.integers(0, 2))  # valid RTCP padding (RFC 3550 §6.4.1)
        if words:
            head = struct.pack("!BBH", raw[0] | 0x20, raw[1], len(raw) // 4 - 1 + words)
            raw = head + raw[4:] + bytes(4 * words - 1) + bytes([4 * words])
        compound += raw
    expected = aiortc_reports(compound)
    assert expected == [
        (p.ssrc, p.sender_info.ntp_timestamp, p.sender_info.rtp_timestamp)
        for p in packets
        if isinstance(p, RtcpSrPacket)
    ]
    assert skymix_reports(compound) == expected
    # broken framing: both refuse it, with the same words
    heads, pos = [], 0
    while pos < len(compound):
        heads.append(pos)
        pos += 4 + 4 * struct.unpack_from("!H", compound, pos + 2)[0]
    at = data.draw(st.sampled_from(heads))
    end = heads[heads.index(at) + 1] if at != heads[-1] else len(compound)
    damage = data.draw(st.sampled_from(["cut", "version", "padding"]))
    broken = bytearray(compound)
    if damage == "cut":  # inside a packet (a cut between packets leaves a shorter compound)
        broken = broken[: data.draw(st.integers(at + 1, end - 1))]
    elif damage == "version":
        broken[at] = data.draw(st.sampled_from([0, 1, 3])) << 6 | broken[at] & 0x3F
    else:  # P set, and the last byte of the packet 0 or more than its body
        broken[at] |= 0x20
        if end > at + 4:
            broken[end - 1] = data.draw(st.sampled_from([0]) | st.integers(end - at - 3, 255))
    broken = bytes(broken)
    refused = aiortc_reports(broken)
    assert isinstance(refused, str), (damage, broken.hex())
    assert skymix_reports(broken) == refused


@settings(max_examples=300, deadline=None)
@given(
    st.lists(rtcp_packets, max_size=4).map(lambda ps: b"".join(bytes(p) for p in ps)),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3),
    st.integers(0, 200),
)
def test_sender_reports_of_damaged_compounds(compound, changes, cut):
    """Any bytes: where aiortc reads the compound, the reports are its reports; where skymix
    refuses it, aiortc refuses it too (skymix does not read the packets it does not need, so
    aiortc may refuse more)."""
    damaged = bytearray(compound[: len(compound) - cut] if cut < len(compound) else compound)
    for at, value in changes:
        if at < len(damaged):
            damaged[at] = value
    damaged = bytes(damaged)
    expected, got = aiortc_reports(damaged), skymix_reports(damaged)
    if isinstance(expected, list):
        assert got == expected
    elif isinstance(got, str):
        event("both refuse")
    else:
        event("only aiortc refuses")
    if isinstance(got, str):
        assert isinstance(expected, str)


# -------------------------------------------------------------------------------- unwrappers


@st.composite
def counter_values(draw, bits: int) -> list[int]:
    """A counter's values as RTP sends them: steps forward across wraps, a little reordering
    and repetition, and now and then a jump beyond a quarter of the range (a sender restart)."""
    modulus = 1 << bits
    value = draw(st.integers(0, modulus - 1) | st.just(modulus - 3))
    out = []
    for _ in range(draw(st.integers(1, 60))):
        step = draw(
            st.one_of(
                st.integers(0, 3),
                st.integers(-5, 5),
                st.integers(0, 4000),
                st.integers(0, modulus - 1),
            )
        )
        value = (value + step) % modulus
        out.append(value)
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([SequenceUnwrapper, TimestampUnwrapper]).flatmap(
        lambda cls: st.tuples(
            st.just(cls), counter_values(cls.BITS), st.lists(st.integers(1, 20), min_size=1)
        )
    )
)
def test_unwrapper_batch_equals_one_by_one(case):
    cls, values, sizes = case
    one = cls()
    expected = [one(v) for v in values]
    batched, got, pos, k = cls(), [], 0, 0
    while pos < len(values):
        size = sizes[k % len(sizes)]
        part = batched.batch(
            np.array(values[pos : pos + size], np.uint32 if cls.BITS == 32 else np.uint16)
        )
        assert part.dtype == np.int64
        got += part.tolist()
        pos, k = pos + size, k + 1
    assert got == expected
    assert batched(values[0]) == one(values[0])  # and the state after is the same
    assert batched.batch(np.zeros(0, np.int64)).tolist() == []


# ------------------------------------------------------------------- StreamAssembler batches


@cache
def vp8_packets() -> list[tuple[int, int, bool, bytes]]:
    """(seq, ts, marker, payload) of 30 VP8 frames (keyframes 0, 10, 20) of several packets,
    sequence numbers and timestamps wrapping (see test_assembler)."""
    stream = vp8_stream(frames=30, gop=10, size=(128, 96))
    return [p for _, _, _, rtp in stream for p in rtp]


@cache
def opus_packets() -> list[tuple[int, int, bool, bytes]]:
    """40 Opus packets of 20 ms (aiortc's packetiser), sequence numbers wrapping."""
    packer = OpusEncoder()
    cc = av.CodecContext.create("libopus", "w")
    cc.sample_rate, cc.layout, cc.format = 48000, "stereo", "s16"
    cc.time_base = Fraction(1, 48000)
    t = np.arange(960 * 40) / 48000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    out, seq = [], 65520
    for i in range(40):
        frame = av.AudioFrame.from_ndarray(
            np.repeat(pcm[i * 960 : (i + 1) * 960], 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = 48000, i * 960
        for packet in cc.encode(frame):
            payloads, ts = packer.pack(packet)
            for payload in payloads:
                out.append((seq & 0xFFFF, (0xFFFF0000 + ts) & 0xFFFFFFFF, False, payload))
                seq += 1
    return out


Plan = list[tuple[int, int, int]]  # (arrival ns after the start, packet index, audio level)


@st.composite
def impairments(draw, count: int, audio: bool) -> Plan:
    """A stretch of a stream of count packets as a relay might capture it: packets dropped,
    repeated (k places later), swapped with the next, delayed by k places. Arrival 1 ms apart
    plus seeded jitter: added to the gaps (times only grow; sometimes none, sometimes long
    pauses) or to each time (times may go back, as in captures merged from two interfaces).
    Audio levels -1 (none) to 127."""
    first = draw(st.sampled_from([0, 0]) | st.integers(0, count - 2))
    last = draw(st.sampled_from([count] * 3) | st.integers(first + 2, count))
    order = list(range(first, last))
    for op, at, k in draw(
        st.lists(
            st.tuples(
                st.sampled_from(["drop", "dup", "swap", "delay"]),
                st.integers(0, 10_000),
                st.integers(1, 40),
            ),
            max_size=10,
        )
    ):
        at %= len(order)
        if op == "drop" and len(order) > 1:
            del order[at]
        elif op == "dup":
            order.insert(min(at + k, len(order)), order[at])
        elif op == "swap" and at + 1 < len(order):
            order[at], order[at + 1] = order[at + 1], order[at]
        elif op == "delay":
            order.insert(min(at + k, len(order) - 1), order.pop(at))
    jitter = draw(st.sampled_from([0, 0, 500_000, 3_000_000, 30_000_000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    noise = rng.integers(0, jitter + 1, len(order))
    if draw(st.integers(0, 3)):
        arrival = np.cumsum(1_000_000 + noise)
    else:
        arrival = 1_000_000 * np.arange(1, len(order) + 1) + noise
    levels = rng.integers(-1, 128, len(order)).tolist() if audio else [-1] * len(order)
    return list(zip(arrival.tolist(), order, levels))


# arrival, seq, timestamp, marker, payload, audio level
Feed = list[tuple[int, int, int, bool, bytes, int | None]]


def feed_of(packets: list[tuple[int, int, bool, bytes]], plan: Plan) -> Feed:
    return [
        (1_700_000_000 * 10**9 + t, *packets[i], None if level < 0 else level)
        for t, i, level in plan
    ]


def stats_of(asm: StreamAssembler) -> dict[str, object]:
    stats = asm.stats
    fields = {name: getattr(stats, name) for name in stats.__slots__ if name != "problems"}
    return {**fields, "problems": [str(p) for p in stats.problems]}


def one_by_one(asm: StreamAssembler, feed: Feed) -> tuple[list, list[bool]]:
    """The frames of one push() per packet, and which packets it dropped (duplicate, late)."""
    frames, dropped = [], []
    for arrival, seq, ts, marker, payload, level in feed:
        before = asm.stats.duplicates + asm.stats.late
        frames += asm.push(arrival, seq, ts, marker, payload, level)
        dropped.append(asm.stats.duplicates + asm.stats.late > before)
    return frames + asm.flush(), dropped


def cut(feed: Feed, sizes: list[int]) -> list[Feed]:
    """The feed in batches of the given sizes (cycled)."""
    batches, pos, k = [], 0, 0
    while pos < len(feed):
        end = min(len(feed), pos + sizes[k % len(sizes)])
        batches.append(feed[pos:end])
        pos, k = end, k + 1
    return batches


def in_batches(asm: StreamAssembler, batches: list[Feed], gaps: bytes) -> list:
    """push_batch per batch; payloads lie in one buffer per batch with other bytes (gaps, the
    rest of each datagram) between them."""
    frames, n = [], 0
    for part in batches:
        buf, start, end = b"", [], []
        for *_, payload, _ in part:
            buf += gaps[: n % (len(gaps) + 1)]
            start.append(len(buf))
            buf += payload
            end.append(len(buf))
            n += 1
        levels = np.array([-1 if p[5] is None else p[5] for p in part], np.int16)
        frames += asm.push_batch(
            np.array([p[0] for p in part], np.int64),
            np.array([p[1] for p in part], np.uint16),
            np.array([p[2] for p in part], np.uint32),
            np.array([p[3] for p in part], np.bool_),
            buf,
            np.array(start, np.int64),
            np.array(end, np.int64),
            levels,
        )
    return frames + asm.flush()


WINDOWS = st.tuples(
    st.sampled_from([2_000_000, 20_000_000, 500_000_000]), st.sampled_from([4, 32, 512])
)


@pytest.mark.parametrize("kind", ["vp8", "opus"])
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_push_batch_equals_push_one_by_one(kind, data):
    """Same frames (every field) and same statistics (every counter, gap, resolution, problem)
    from push_batch over random batches as from one push() per packet."""
    packets = vp8_packets() if kind == "vp8" else opus_packets()
    codec = Vp8() if kind == "vp8" else Opus()
    feed = feed_of(packets, data.draw(impairments(len(packets), audio=kind == "opus"), "plan"))
    window_ns, window_packets = data.draw(WINDOWS, "windows")
    sizes = data.draw(st.lists(st.integers(1, 64), min_size=1, max_size=6), "batch sizes")
    gaps = data.draw(st.binary(max_size=5), "gaps")

    def assembler() -> StreamAssembler:
        return StreamAssembler(
            codec, 7, window_ns=window_ns, window_packets=window_packets, file="f"
        )

    single, batched = assembler(), assembler()
    expected, dropped = one_by_one(single, feed)
    batches = cut(feed, sizes)
    got = in_batches(batched, batches, gaps)
    stats = single.stats
    for name in (
        "lost",
        "late",
        "duplicates",
        "reordered",
        "incomplete_frames",
        "frames_skipped_for_keyframe",
    ):
        if getattr(stats, name):
            event(name)
    if len(stats.gaps) > 1:
        event("several gaps")
    if any(len(b) > 1 and dropped[sum(map(len, batches[:i]))] for i, b in enumerate(batches)):
        event("a batch begins with dropped packets")
    event(f"{len(expected) // 10 * 10}+ frames")
    assert got == expected
    assert stats_of(batched) == stats_of(single)


# Minimal cases where push_batch and push() once disagreed: Opus packets of one 20 ms frame each
# (timestamp 960 x seq), a 2 ms window; 10, 11, 12 start the stream (12 arrives 3 ms after 10).
OPUS_PACKET = b"\xfc\xff\xfe"
MS = 1_000_000


def opus_runs(plan: list[tuple[int, int]], batches: list[int]) -> tuple[tuple, tuple]:
    """(frame seqs, lost, late, duplicates, reordered) of plan [(arrival ms, seq)] pushed one by
    one, and in batches of the given sizes."""

    def summary(asm, frames):
        return (
            [f.first_seq for f in frames],
            asm.stats.lost,
            asm.stats.late,
            asm.stats.duplicates,
            asm.stats.reordered,
        )

    feed = [(int(t * MS), seq, 960 * seq, False, OPUS_PACKET, None) for t, seq in plan]
    single, batched = (StreamAssembler(Opus(), 7, window_ns=2 * MS) for _ in range(2))
    parts, pos = [], 0
    for size in batches:
        parts.append(feed[pos : pos + size])
        pos += size
    return (
        summary(single, one_by_one(single, feed)[0]),
        summary(batched, in_batches(batched, parts, b"")),
    )


START = [(0, 10), (1, 11), (3, 12)]


def test_a_dropped_packet_moves_the_batch_clock():
    """14 arrives with 13 missing; an old copy of 10 arrives 2.5 ms after 14, then 13. One by
    one, the copy is a duplicate and 13 fills its hole. With 14 and the copy in one batch, the
    copy's arrival declares 13 lost and 13 is then late."""
    single, batched = opus_runs(START + [(4, 14), (6.5, 10), (7, 13)], [3, 2, 1])
    assert single == ([10, 11, 12, 13, 14], 0, 0, 1, 1)
    assert batched == single  # got ([10, 11, 12, 14], 1, 1, 1, 0)


def test_a_late_packet_moves_the_batch_clock():
    """17 arrives 3 ms after 14, so hole 13 is lost; 13 comes late (8 ms), then 15 (9 ms) fills
    hole 15. One by one it is in time: the newest packet kept before it, 17 (7 ms), is 2 ms
    after 16, the packet above the hole. In one batch the late 13 (8 ms) is taken as the newest,
    3 ms after 16, and 15 is declared late too."""
    single, batched = opus_runs(START + [(4, 14), (5, 16), (7, 17), (8, 13), (9, 15)], [3, 5])
    assert single == ([10, 11, 12, 14, 15, 16, 17], 1, 1, 0, 1)
    assert batched == single  # got ([10, 11, 12, 14, 16, 17], 2, 2, 0, 0)


def test_repeats_of_a_late_packet_in_one_batch():
    """15 arrives 3 ms after 14: hole 13 is lost; 13 then arrives twice. One by one both copies
    are late; in one batch with 15 the first is late and the second a duplicate."""
    single, batched = opus_runs(START + [(4, 14), (7, 15), (8, 13), (9, 13)], [3, 4])
    assert single == ([10, 11, 12, 14, 15], 1, 2, 0, 0)
    assert batched == single  # got ([10, 11, 12, 14, 15], 1, 1, 1, 0)


def test_late_rows_between_do_not_hide_the_packets_above_a_hole():
    """Found by the property above: 26 is missing while 27 arrives, then 25, three packets
    already late (15, 14, 13), then 28-31; when 26 comes, five packets above it wait (27-31),
    more than window_packets: it is late, however many late rows came in between."""
    plan = [
        (t * MS, seq, 0)
        for t, seq in enumerate(
            [
                2,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                11,
                12,
                16,
                17,
                18,
                19,
                20,
                21,
                22,
                23,
                24,
                27,
                25,
                15,
                14,
                13,
                28,
                29,
                30,
                31,
                26,
                32,
                33,
            ],
            start=1,
        )
    ]
    packets = opus_packets()
    feed = feed_of(packets, plan)
    make = lambda: StreamAssembler(Opus(), 7, window_ns=20 * MS, window_packets=4)  # noqa: E731
    single, batched = make(), make()
    expected, _ = one_by_one(single, feed)
    got = in_batches(batched, cut(feed, [16]), b"")
    assert got == expected
    assert stats_of(batched) == stats_of(single)
    assert single.stats.late == 4
