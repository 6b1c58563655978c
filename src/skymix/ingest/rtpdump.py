"""rtpdump reader: the rtptools ``-F dump`` format (also written by Wireshark's RTP player).

Layout (rtptools ``rtpdump.h``, all big-endian)::

    "#!rtpplay1.0 <address>/<port>\\n"
    RD_hdr_t     start.tv_sec u32, start.tv_usec u32, source u32 (IPv4), port u16, padding u16
    RD_packet_t  length u16 (record incl. this 8-byte header), plen u16 (0: RTCP), offset u32 (ms)
                 then length - 8 bytes of the packet, repeated until the end of the file

Arrival = start + offset ms. The text line names the address the packets went to (both rtptools
and Wireshark write the destination there); the binary header names the source where a writer
recorded one (Wireshark), or repeats the text line's address (rtptools), in which case the source
is unknown. rtptools records RTCP from port + 1, so RTCP records get the destination port + 1 and
no source.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import CaptureError
from .records import Datagram, Endpoint, ReadStats, guard_times

__all__ = ["RTPDUMP_MAGIC", "RtpdumpHeader", "read_rtpdump", "read_rtpdump_header"]

#: The first 13 bytes of every rtpdump file.
RTPDUMP_MAGIC = b"#!rtpplay1.0 "
#: rtptools reads the text line with fgets(line, 80); allow some slack for IPv6 addresses.
MAX_LINE = 256
FILE_HEADER = struct.Struct("!IIIHH")
RECORD_HEADER = struct.Struct("!HHI")
SKIP_EMPTY = "empty rtpdump record"
BUFFER_SIZE = 1 << 20
#: Records further apart in time than this (ms) are suspect until the record after them agrees.
JUMP_MS = 3_600_000
#: The shortest packet a search after damage resumes at (an RTCP header with its SSRC).
MIN_PACKET = 8
#: Bytes examined by the first and the largest read of a search for the next record.
SEARCH_FIRST = 1 << 14
SEARCH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class RtpdumpHeader:
    """What an rtpdump file says before its first record.

    start_ns: recording start, ns since the epoch. dst: the text line's address. src: the binary
    header's source where it differs from dst (else None). data_offset: where records begin.
    """

    start_ns: int
    dst: Endpoint
    src: Endpoint | None
    data_offset: int


def read_rtpdump_header(path: str | os.PathLike[str]) -> RtpdumpHeader:
    """Parse the text line and the 16-byte binary header; CaptureError (offset 0) if damaged."""
    name = os.fspath(path)

    def bad(message: str) -> CaptureError:
        return CaptureError(message, file=name, offset=0)

    try:
        with open(name, "rb") as f:
            head = f.read(MAX_LINE + FILE_HEADER.size)
    except OSError as exc:
        raise bad(f"cannot open: {exc.strerror}") from exc
    if not head.startswith(RTPDUMP_MAGIC):
        raise bad("not an rtpdump file (no #!rtpplay1.0 line)")
    end = head.find(b"\n", 0, MAX_LINE)
    if end < 0:
        raise bad("rtpdump text line has no end")
    address, slash, port_text = head[len(RTPDUMP_MAGIC) : end].rstrip(b"\r").rpartition(b"/")
    if (
        not slash
        or not address
        or not port_text.isdigit()
        or not all(0x21 <= c < 0x7F for c in address)
    ):
        raise bad(f"bad rtpdump address line {head[:end]!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise bad(f"bad rtpdump port {port}")
    fixed = head[end + 1 : end + 1 + FILE_HEADER.size]
    if len(fixed) < FILE_HEADER.size:
        raise bad("rtpdump binary header truncated")
    sec, usec, source, src_port, _padding = FILE_HEADER.unpack(fixed)
    if usec >= 1_000_000:
        raise bad(f"bad rtpdump start time ({usec} µs)")
    dst = Endpoint(address.decode("ascii"), port)
    src: Endpoint | None = Endpoint(socket.inet_ntoa(source.to_bytes(4, "big")), src_port)
    if src == dst or source == 0:
        src = None
    return RtpdumpHeader(sec * 1_000_000_000 + usec * 1000, dst, src, end + 1 + FILE_HEADER.size)


def read_rtpdump(
    path: str | os.PathLike[str], stats: ReadStats | None = None
) -> Iterator[Datagram]:
    """Every RTP and RTCP packet of an rtpdump file, in file order.

    Raises CaptureError (offset 0) at once when the file header is damaged. A record whose length
    cannot be a record (shorter than its own header, or longer than the packet it holds), that
    holds no version 2 packet or jumps an hour in time is checked against the record after it;
    damage is skipped to the next plausible record (reported in ``stats.spans`` and
    ``stats.problems``), a truncated last record ends the iteration with a problem. Packets whose
    arrival time is out of line are set aside (``records.guard_times``).
    """
    name = os.fspath(path)
    header = read_rtpdump_header(name)
    stats = ReadStats() if stats is None else stats
    return guard_times(_records(name, header, stats), stats)


def _records(name: str, header: RtpdumpHeader, stats: ReadStats) -> Iterator[Datagram]:
    """The record loop of read_rtpdump, after the header was checked."""
    unpack = RECORD_HEADER.unpack
    rtp_dst = header.dst
    rtcp_dst = Endpoint(rtp_dst.host, (rtp_dst.port + 1) & 0xFFFF)
    start_ns = header.start_ns
    offset = header.data_offset
    prev_offset: int | None = None
    prev_ms: int | None = None
    floor = offset  # searches start after the last place they resumed
    with open(name, "rb", buffering=BUFFER_SIZE) as f:
        f.seek(offset)
        read = f.read
        while True:
            head = read(RECORD_HEADER.size)
            if len(head) < RECORD_HEADER.size:
                if head:
                    stats.problems.append(
                        CaptureError(
                            f"truncated record header ({len(head)} of 8 bytes)",
                            file=name,
                            offset=offset,
                        )
                    )
                return
            length, plen, ms = unpack(head)
            size = length - RECORD_HEADER.size
            data = read(size) if size >= 0 else b""
            if (
                size < 0
                or (plen and size > plen)
                or len(data) < size
                or (size and data[0] >> 6 != 2)
                or (prev_ms is not None and not -JUMP_MS <= ms - prev_ms <= JUMP_MS)
            ):
                if size < 0 or (plen and size > plen):
                    reason = f"impossible record length {length} (packet length {plen})"
                elif len(data) < size:
                    reason = f"truncated record ({len(data)} of {size} bytes)"
                else:
                    reason = "implausible record (not RTP, or its time)"
                if len(data) == size and _plausible(f, offset, prev_ms, False):
                    f.seek(offset + length)
                else:
                    start = offset + 1 if prev_offset is None else prev_offset + RECORD_HEADER.size
                    resume = _search(f, max(start, floor), prev_ms)
                    if resume is None:
                        stats.problems.append(CaptureError(reason, file=name, offset=offset))
                        return
                    stats.skip_span(name, offset if resume > offset else start, resume, reason)
                    floor = resume + 1
                    f.seek(resume)
                    offset = resume
                    continue
            prev_offset, prev_ms = offset, ms
            stats.records += 1
            if size == 0:
                stats.skip(SKIP_EMPTY)
            else:
                stats.datagrams += 1
                if plen:
                    yield Datagram(
                        start_ns + ms * 1_000_000, data, header.src, rtp_dst, name, offset
                    )
                else:
                    yield Datagram(start_ns + ms * 1_000_000, data, None, rtcp_dst, name, offset)
            offset += length


def _sane(buf: bytes, p: int) -> tuple[int, int] | None:
    """(length, ms) of a record header at buf[p] whose record could hold an RTP or RTCP packet
    (where buf holds it), else None."""
    if p + RECORD_HEADER.size > len(buf):
        return None
    length, plen, ms = RECORD_HEADER.unpack_from(buf, p)
    size = length - RECORD_HEADER.size
    if size < MIN_PACKET or (plen and size > plen):
        return None
    if p + length < len(buf) and buf[p + RECORD_HEADER.size] >> 6 != 2:
        return None
    return length, ms


def _plausible_at(buf: bytes, p: int, eof: bool, ref_ms: int | None, candidate: bool) -> bool:
    """Whether a record starts at buf[p]: it fits, holds a version 2 packet, and the record after
    it is sane and close in time (to it, or to ref_ms when it is not a candidate), or the file
    ends after it."""
    found = _sane(buf, p)
    if found is None or p + found[0] > len(buf):
        return False
    length, ms = found
    if candidate and buf[p + RECORD_HEADER.size] >> 6 != 2:
        return False
    after = p + length
    if len(buf) - after < RECORD_HEADER.size:
        near_ref = ref_ms is None or abs(ms - ref_ms) <= JUMP_MS
        return eof and (near_ref or not candidate)
    following = _sane(buf, after)
    if following is None:
        return False
    if abs(following[1] - ms) <= JUMP_MS:
        return True
    return not candidate and ref_ms is not None and abs(following[1] - ref_ms) <= JUMP_MS


def _plausible(f: BinaryIO, offset: int, ref_ms: int | None, candidate: bool) -> bool:
    """_plausible_at for the record at offset in the file."""
    f.seek(offset)
    head = f.read(RECORD_HEADER.size)
    if len(head) < RECORD_HEADER.size:
        return False
    want = int.from_bytes(head[:2], "big") + RECORD_HEADER.size + 1  # to the next packet's first
    f.seek(offset)
    buf = f.read(want)
    return _plausible_at(buf, 0, len(buf) < want, ref_ms, candidate)


def _search(f: BinaryIO, start: int, ref_ms: int | None) -> int | None:
    """The offset of the first plausible record at or after start, or None."""
    pos = start
    span = SEARCH_FIRST
    while True:
        want = span + 2 * 0xFFFF + RECORD_HEADER.size
        f.seek(pos)
        buf = f.read(want)
        eof = len(buf) < want
        count = len(buf) - RECORD_HEADER.size + 1 if eof else span
        for q in range(count):
            if buf[q] >= 0x80 or (q + 8 < len(buf) and buf[q + 8] >> 6 != 2):
                continue  # records are shorter than 32 KiB and hold version 2 packets
            if _plausible_at(buf, q, eof, ref_ms, True):
                return pos + q
        if eof:
            return None
        pos += span
        span = min(2 * span, SEARCH_CHUNK)
