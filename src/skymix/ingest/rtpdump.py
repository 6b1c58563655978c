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
    cannot be a record (shorter than its own header, or longer than the packet it holds) means
    the rest is garbage: reading stops with a CaptureError in ``stats.problems``. Packets whose
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
            if size < 0 or (plen and size > plen):
                stats.problems.append(
                    CaptureError(
                        f"impossible record length {length} (packet length {plen})",
                        file=name,
                        offset=offset,
                    )
                )
                return
            data = read(size)
            if len(data) < size:
                stats.problems.append(
                    CaptureError(
                        f"truncated record ({len(data)} of {size} bytes)", file=name, offset=offset
                    )
                )
                return
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
