"""RTP and RTCP told apart, and RTP headers parsed, for a whole batch of datagrams at once.

The rules are those of RFC 3550, RFC 5761 (RTCP on the RTP port: second byte 192-223), RFC 7983
(STUN and DTLS by first byte) and RFC 8285 (one- and two-byte header extensions), with the same
checks as aiortc's ``RtpPacket.parse``: a packet it would refuse is reported as malformed with its
message, a packet it accepts is parsed to the same fields.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..ingest.batch import DatagramBatch
from ..session.detect import classify_datagram
from .codecs import ANNEXB_START, H264, FrameInfo, Opus, Pcma, Pcmu, Vp8

__all__ = [
    "PayloadLayout",
    "RtpColumns",
    "SplitBatch",
    "audio_levels",
    "payload_layout",
    "sender_reports",
    "split_batch",
]

Ints = npt.NDArray[np.int64]
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000  # the low 4 bits are "appbits" (RFC 8285 §4.3)
#: Header extension elements kept per packet (ids and first value byte); RFC 8285's one-byte form
#: holds at most 14 distinct ids, the two-byte form rarely more.
VECTOR_ELEMENTS = 64
#: Steps (elements or padding bytes) walked as arrays; longer lists are finished one by one.
VECTOR_STEPS = 24


@dataclass(frozen=True, slots=True)
class RtpColumns:
    """The RTP packets of a batch: datagram row, header fields, payload (padding removed) and
    header-extension block as offsets into the batch's buffer."""

    rows: npt.NDArray[np.intp]
    marker: npt.NDArray[np.bool_]
    payload_type: Ints
    seq: Ints
    timestamp: Ints
    ssrc: Ints
    payload_start: Ints
    payload_end: Ints
    ext_profile: Ints  # -1: no extension block
    ext_start: Ints
    ext_end: Ints
    ext_ids: npt.NDArray[np.int16]  # (elements, packets): ids of the first elements, -1 none
    ext_values: npt.NDArray[np.int16]  # their first value byte, -1 for an empty value

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, index: npt.NDArray[np.intp]) -> RtpColumns:
        return RtpColumns(*(getattr(self, f)[..., index] for f in self.__slots__))


@dataclass(frozen=True, slots=True)
class SplitBatch:
    """A batch sorted into RTP (parsed), RTCP (rows), other traffic (row, what it is) and
    RTP packets a parser refuses (row, why)."""

    rtp: RtpColumns
    rtcp: list[int]
    other: Sequence[tuple[int, str]]
    malformed: list[tuple[int, str]]


def _bytes(buf: bytes) -> npt.NDArray[np.uint8]:
    """The buffer as an array that can be indexed even when it is empty (one zero byte)."""
    return np.frombuffer(buf, np.uint8) if buf else np.zeros(1, np.uint8)


def _u16(b: npt.NDArray[np.uint8], at: Ints) -> Ints:
    return (b[at].astype(np.int64) << 8) | b[at + 1]


def _u32(b: npt.NDArray[np.uint8], at: Ints) -> Ints:
    return (_u16(b, at) << 16) | _u16(b, at + 2)


def split_batch(batch: DatagramBatch, rtp_only: bool = False) -> SplitBatch:
    """Sort a batch's datagrams; rtp_only: every datagram is RTP (a Janus recording holds
    nothing else, whatever its second byte looks like)."""
    b = _bytes(batch.buf)
    start, end = batch.start, batch.end
    length = end - start
    safe = np.where(length > 0, start, 0)
    first = b[safe].astype(np.int64)
    second = b[np.where(length > 1, start + 1, 0)].astype(np.int64)
    v2 = (length > 0) & (first >= 128) & (first <= 191)
    rtcp = v2 & (length >= 8) & (second >= 192) & (second <= 223) & (not rtp_only)
    rtp = v2 & ~rtcp & (length >= 12)
    other = [(i, classify_datagram(batch.data(i))) for i in np.flatnonzero(~(rtp | rtcp)).tolist()]

    rows = np.flatnonzero(rtp)
    s, e = start[rows], end[rows]
    first, second = first[rows], second[rows]
    cc = first & 0x0F
    pos = s + 12 + 4 * cc
    bad = pos > e
    has_ext = (first & 0x10) != 0
    bad |= has_ext & (pos + 4 > e)
    at = np.where(has_ext & ~bad, pos, s)
    profile = np.where(has_ext & ~bad, _u16(b, at), -1)
    ext_len = np.where(has_ext & ~bad, _u16(b, at + 2) * 4, 0)
    ext_start = np.where(has_ext, pos + 4, pos)
    bad |= has_ext & (ext_start + ext_len > e)
    ext_end = ext_start + ext_len
    payload_start = np.where(has_ext, ext_end, pos)
    padded = (first & 0x20) != 0
    pad = np.where(padded & ~bad, b[np.maximum(e - 1, 0)], 0).astype(np.int64)
    bad |= padded & ((pad == 0) | (pad > e - payload_start))
    walk = np.flatnonzero(~bad & _known_profile(profile))
    ids = values = np.full((0, len(rows)), -1, np.int16)
    if len(walk):
        walked_ids, walked_values, broken = _walk_extensions(
            b, profile[walk], ext_start[walk], ext_end[walk]
        )
        ids = np.full((len(walked_ids), len(rows)), -1, np.int16)
        values = ids.copy()
        ids[:, walk] = walked_ids
        values[:, walk] = walked_values
        bad[walk[broken]] = True
    malformed = []
    if bad.any():
        from aiortc.rtp import RtpPacket  # only to word the error (importing aiortc is slow)
    for i in rows[bad].tolist():
        try:
            RtpPacket.parse(batch.data(i))
            malformed.append((i, "malformed RTP header extension"))
        except ValueError as exc:
            malformed.append((i, str(exc)))
    good = ~bad
    columns = RtpColumns(
        rows[good],
        (second[good] & 0x80) != 0,
        second[good] & 0x7F,
        _u16(b, s[good] + 2),
        _u32(b, s[good] + 4),
        _u32(b, s[good] + 8),
        payload_start[good],
        (e - pad)[good],
        profile[good],
        ext_start[good],
        ext_end[good],
        ids[:, good],
        values[:, good],
    )
    return SplitBatch(columns, np.flatnonzero(rtcp).tolist(), other, malformed)


def _known_profile(profile: Ints) -> npt.NDArray[np.bool_]:
    return (profile == ONE_BYTE_PROFILE) | (profile & 0xFFF0 == TWO_BYTE_PROFILE)


def audio_levels(rtp: RtpColumns, ext_id: int) -> npt.NDArray[np.int16]:
    """The RFC 6464 level (0-127, -dBov) of each packet from extension ext_id, -1 where none."""
    levels = np.full(len(rtp), -1, np.int16)
    for ids, values in zip(rtp.ext_ids, rtp.ext_values):
        hit = (ids == ext_id) & (levels < 0) & (values >= 0)
        levels[hit] = values[hit] & 0x7F
    return levels


def _walk_extensions(
    b: npt.NDArray[np.uint8], profile: Ints, start: Ints, end: Ints
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16], npt.NDArray[np.bool_]]:
    """Walk RFC 8285 element lists: the ids and first value bytes of the first VECTOR_ELEMENTS
    elements (-1: none; value -1: empty) and whether the list is truncated, per block. Padding
    bytes (0) are skipped; a one-byte element with the reserved id 15 ends the list (§4.2).
    Lists still going after VECTOR_STEPS steps (long padding runs) are finished one by one."""
    n = len(start)
    ids = np.full((VECTOR_ELEMENTS, n), -1, np.int16)
    values = np.full((VECTOR_ELEMENTS, n), -1, np.int16)
    broken = np.zeros(n, np.bool_)
    slot = np.zeros(n, np.int64)
    pos = start.copy()
    two = profile & 0xFFF0 == TWO_BYTE_PROFILE
    live = np.flatnonzero(pos < end)
    for _ in range(VECTOR_STEPS):
        if not len(live):
            break
        p = pos[live]
        byte = b[p].astype(np.int64)
        is_two = two[live]
        padding = byte == 0
        head = np.where(is_two, 2, 1)
        size = np.where(is_two, b[np.minimum(p + 1, len(b) - 1)], (byte & 0x0F) + 1)
        over = ~padding & (is_two & (p + 2 > end[live]) | (p + head + size > end[live]))
        ident = np.where(is_two, byte, byte >> 4)
        stop = ~is_two & (ident == 15)
        over &= ~stop
        broken[live[over]] = True
        element = ~padding & ~over & ~stop & (slot[live] < VECTOR_ELEMENTS)
        rows = live[element]
        ids[slot[rows], rows] = ident[element]
        has_value = element & (size > 0)
        values[slot[live[has_value]], live[has_value]] = b[p[has_value] + head[has_value]]
        slot[rows] += 1
        pos[live] = np.where(padding, p + 1, p + head + size)
        live = live[~over & ~stop & (pos[live] < end[live])]
    for i in live.tolist():
        broken[i] = _walk_one(
            b, bool(two[i]), int(pos[i]), int(end[i]), ids[:, i], values[:, i], int(slot[i])
        )
    used = int((ids >= 0).any(axis=1).sum())  # slots fill in order: the used ones come first
    return ids[:used], values[:used], broken


def _walk_one(
    b: npt.NDArray[np.uint8],
    two: bool,
    pos: int,
    end: int,
    ids: npt.NDArray[np.int16],
    values: npt.NDArray[np.int16],
    slot: int,
) -> bool:
    """The rest of one element list, byte by byte, filling the free slots; truncated?"""
    while pos < end:
        byte = int(b[pos])
        if byte == 0:
            pos += 1
            continue
        if two:
            if pos + 2 > end:
                return True
            ident, size, head = byte, int(b[pos + 1]), 2
        else:
            ident, size, head = byte >> 4, (byte & 0x0F) + 1, 1
            if ident == 15:
                return False
        if pos + head + size > end:
            return True
        if slot < VECTOR_ELEMENTS:
            ids[slot] = ident
            values[slot] = int(b[pos + head]) if size else -1
            slot += 1
        pos += head + size
    return False


@dataclass(frozen=True, slots=True)
class PayloadLayout:
    """The batch twin of a codec's per-packet starts_frame/depayload/frame_info, for codecs
    whose payload is a descriptor followed by frame data.

    data_start: where the frame data of each payload begins (relative to the payload), -1 where
    the per-packet depayloader would refuse it (it is asked then, for the reason). starts: the
    codec's starts_frame. simple: a frame beginning with this payload is a delta frame or a valid
    one-packet audio frame, so its keyframe flag and size are ``simple_info`` without parsing
    (its duration and DTX, which nothing downstream reads, are not filled in).
    prefix: per payload, bytes that go before its data (an H.264 start code and NAL header).
    """

    data_start: Ints
    starts: npt.NDArray[np.bool_]
    simple: npt.NDArray[np.bool_]
    simple_info: FrameInfo
    prefix: list[bytes] | None = None  # bytes the depayloader puts before the data (H.264)


_AUDIO_INFO = FrameInfo(keyframe=True)
_DELTA_INFO = FrameInfo(keyframe=False)
OPUS_MAX_FRAME = 1275  # bytes, RFC 6716 §3.4 R2


def payload_layout(
    codec: object, b: npt.NDArray[np.uint8], start: Ints, end: Ints
) -> PayloadLayout | None:
    """The layout of the payloads b[start:end] for VP8, H.264, Opus and G.711; None for the
    codecs depayloaded packet by packet (VP9)."""
    b = b if len(b) else np.zeros(1, np.uint8)  # every payload empty: nothing to index
    n = end - start
    zero = np.zeros(len(n), np.int64)
    if isinstance(codec, Opus):
        toc = b[np.where(n > 0, start, 0)]
        code = toc & 0x03
        ok = (n > 0) & (
            ((code == 0) & (n - 1 <= OPUS_MAX_FRAME))
            | ((code == 1) & ((n - 1) % 2 == 0) & ((n - 1) // 2 <= OPUS_MAX_FRAME))
        )
        return PayloadLayout(np.where(n > 0, zero, -1), np.ones(len(n), np.bool_), ok, _AUDIO_INFO)
    if isinstance(codec, (Pcmu, Pcma)):
        return PayloadLayout(
            np.where(n > 0, zero, -1), np.ones(len(n), np.bool_), n > 0, _AUDIO_INFO
        )
    if isinstance(codec, H264):
        return _h264_layout(b, start, n)
    if not isinstance(codec, Vp8):
        return None
    # RFC 7741 §4.2: X R N S R PID | I L T K | PictureID (1-2) | TL0PICIDX | TID/KEYIDX
    last = len(b) - 1
    first = b[np.where(n > 0, start, 0)].astype(np.int64)
    extended = (first & 0x80) != 0
    ext = b[np.minimum(start + 1, last)].astype(np.int64)
    ext = np.where(extended & (n > 1), ext, 0)
    pos = 1 + extended
    has_pid = (ext & 0x80) != 0
    long_pid = has_pid & ((b[np.minimum(start + pos, last)] & 0x80) != 0)
    pos = pos + has_pid + long_pid + ((ext & 0x40) != 0) + ((ext & 0x30) != 0)
    # aiortc's parser checks each field's bytes (the descriptor is whole: starts_frame answers);
    # depayload also wants data after it
    described = (n > 0) & (pos <= n)
    ok = described & (pos < n)
    data_start = np.where(ok, pos, -1)
    starts = described & ((first & 0x10) != 0) & ((first & 0x07) == 0)
    delta = ok & starts & ((b[np.minimum(start + np.maximum(pos, 0), last)] & 0x01) != 0)
    return PayloadLayout(data_start, starts, delta, _DELTA_INFO)


def _h264_layout(b: npt.NDArray[np.uint8], start: Ints, n: Ints) -> PayloadLayout:
    """RFC 6184: a single NAL unit gets a start code; an FU-A fragment loses its two header bytes
    and the first one gets a start code and the rebuilt NAL header (§5.8). STAP-A and damaged
    payloads are left to the per-packet depayloader."""
    last = len(b) - 1
    head = b[np.where(n > 0, start, 0)].astype(np.int64)
    nal = head & 0x1F
    fu = b[np.minimum(start + 1, last)].astype(np.int64)
    inner = fu & 0x1F
    single = (n > 0) & (nal > 0) & (nal < 24)
    fu_a = (n >= 3) & (nal == 28) & (inner > 0) & (inner < 24) & ((fu & 0xC0) != 0xC0)
    first_fragment = fu_a & ((fu & 0x80) != 0)
    data_start = np.where(single, 0, np.where(fu_a, 2, -1))
    # starts_frame: an FU-A with its S bit (whatever the depayloader then says), a STAP-A, a
    # single NAL unit; types it does not support do not start a frame
    starts = single | ((n >= 2) & (nal == 28) & ((fu & 0x80) != 0)) | ((n > 0) & (nal == 24))
    prefix = [
        ANNEXB_START if one else ANNEXB_START + bytes(((h & 0xE0) | i,)) if begins else b""
        for one, begins, h, i in zip(
            single.tolist(), first_fragment.tolist(), head.tolist(), inner.tolist()
        )
    ]
    slice_type = np.where(single, nal, inner)
    simple = (single | first_fragment) & (slice_type == 1)
    return PayloadLayout(data_start, starts, simple, _DELTA_INFO, prefix)


RTCP_SR = 200
_RTCP_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IQI")  # SSRC, NTP timestamp, RTP timestamp


def sender_reports(data: bytes) -> list[tuple[int, int, int]]:
    """(SSRC, 64-bit NTP timestamp, RTP timestamp) of each sender report (RFC 3550 §6.4.1) in a
    compound RTCP packet; ValueError when the compound's framing is broken (length, version,
    padding). Other packet types are stepped over unread: skymix needs only the reports."""
    found = []
    pos = 0
    while pos < len(data):
        if len(data) < pos + 4:
            raise ValueError("RTCP packet length is less than 4 bytes")
        first, packet_type, length = _RTCP_HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise ValueError("RTCP packet has invalid version")
        end = pos + 4 + length * 4
        if len(data) < end:
            raise ValueError("RTCP packet is truncated")
        body_end = end
        if first & 0x20:
            pad = data[end - 1] if end > pos + 4 else 0
            if not pad or pad > end - pos - 4:
                raise ValueError("RTCP packet padding length is invalid")
            body_end -= pad
        if packet_type == RTCP_SR:
            if body_end - pos - 4 < 24:
                raise ValueError("RTCP sender report is truncated")
            found.append(_SENDER_INFO.unpack_from(data, pos + 4))
        pos = end
    return found
