"""pcap and pcapng readers: every UDP datagram of a capture, with its arrival time and addresses.

Formats: classic pcap (``man 5 pcap-savefile``: both byte orders, µs and ns magics) and pcapng
(draft-tuexen-opsawg-pcapng: SHB, IDB, EPB, SPB, obsolete PB; several sections and interfaces;
``if_tsresol`` 10^-n and 2^-n, ``if_tsoffset``; other blocks skipped by length).

Link layers (tcpdump.org linktypes): Ethernet (1) with stacked 802.1Q/802.1ad/QinQ tags, Linux
cooked SLL (113) and SLL2 (276), raw IP (101, and 12/14 as stored by BSDs), BSD NULL (0, either
byte order) and LOOP (108). Network: IPv4 with options, IPv6 with extension headers (RFC 8200),
then UDP (RFC 768). Everything else is skipped and counted in ``ReadStats.skipped`` by reason.

IP fragments are not reassembled: RTP senders keep datagrams under the path MTU, so a fragment on
a relay's capture is rare and never media we could use half of. Non-first fragments and first
fragments with more to come are skipped and counted as ``"ip fragment"``.

Files are read sequentially through a buffered file; nothing but the current record is held.

Damage. A corrupt record length must not cost the rest of the file. Classic pcap has no record
marker, so a record is suspect when its captured length is impossible or its time jumps more than
``JUMP_NS`` from the record before; a suspect whose length leads to a plausible next record is
kept (a real pause; ``records.guard_times`` then decides about its time), otherwise the reader
searches forward, from the frame of the record before (whose own length may be the corrupt one),
for a plausible record: a sane header, a frame that parses as IP/UDP, and a record after it that
is sane too and close in time. pcapng blocks carry their length twice: after damage the reader
resumes at the next block whose type is known and whose two lengths agree (and the next block's
too). The bytes skipped are reported (``ReadStats.spans``); a truncated last record is the end of
the capture, as before. All of this runs only on a suspect record: undamaged files cost nothing.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from ..errors import CaptureError
from .records import Datagram, Endpoint, ReadStats, guard_times

__all__ = [
    "LINKTYPES",
    "PcapSync",
    "PCAPNG_MAGIC",
    "PCAP_MAGICS",
    "read_pcap",
    "read_pcapng",
]

#: The four classic pcap magics as they appear on disk, and what they mean: (byte order, ns?).
PCAP_MAGICS: dict[bytes, tuple[str, bool]] = {
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True),
    b"\xa1\xb2\x3c\x4d": (">", True),
}
#: The pcapng Section Header Block type, the first four bytes of every pcapng file.
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_12 = 12
LINKTYPE_RAW_14 = 14
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
#: The link types this module decodes.
LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_RAW_12,
        LINKTYPE_RAW_14,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_LINUX_SLL2,
    }
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_ETHERTYPES = frozenset({0x8100, 0x88A8, 0x9100})
AF_INET = 2
AF_INET6 = frozenset({24, 28, 30})  # NetBSD/OpenBSD, FreeBSD, macOS
IPPROTO_UDP = 17
IPV6_EXT_LEN8 = frozenset({0, 43, 60, 135, 139, 140})  # (len + 1) * 8 bytes
IPV6_FRAGMENT = 44
IPV6_AH = 51

# Skip reasons, as counted in ReadStats.skipped.
SKIP_LINK = "unsupported link type"
SKIP_NOT_IP = "not IP"
SKIP_NOT_UDP = "not UDP"
SKIP_FRAGMENT = "ip fragment"
SKIP_BAD_IP = "bad IP header"
SKIP_BAD_UDP = "UDP length disagrees with IP length"
SKIP_TRUNCATED = "truncated by snaplen"
SKIP_BAD_BLOCK = "malformed pcapng block"
SKIP_NO_INTERFACE = "unknown pcapng interface"
SKIP_UNTIMED = "SPB before any timestamp"

PCAP_HEADER_LEN = 24
PCAP_RECORD_LEN = 16
#: Larger captured lengths are corrupt headers (libpcap's MAXIMUM_SNAPLEN is 262144).
MAX_CAPLEN = 262144
#: Larger pcapng blocks are corrupt lengths (Wireshark refuses blocks over 16 MiB).
MAX_BLOCK_LEN = 16 * 1024 * 1024
BUFFER_SIZE = 1 << 20
#: Records further apart in time than this are suspect until the record after them agrees.
JUMP_NS = 3600 * 1_000_000_000
#: The longest record or block a search after damage accepts: a UDP datagram and its headers.
CANDIDATE_MAX = 65535 + 40 + 128
#: The shortest frame holding a UDP datagram (IPv4 + UDP headers).
MIN_UDP_FRAME = 28
#: Bytes examined by the first read of a search for the next record after damage (most damage
#: is a record or two long); each further read examines twice as many, up to SEARCH_CHUNK.
SEARCH_FIRST = 1 << 14
SEARCH_CHUNK = 1 << 20
#: pcapng block types a search after damage resumes at (pcapng draft, section 10.1).
KNOWN_BLOCKS = frozenset({0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 9, 0x0A, 0x0BAD, 0x40000BAD})

BLOCK_SHB = 0x0A0D0D0A
BLOCK_IDB = 1
BLOCK_PB = 2
BLOCK_SPB = 3
BLOCK_EPB = 6
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14

_U16 = struct.Struct("!H")

# A link decoder finds the IP header in a frame: (offset of the IP header, 4 or 6) or a skip reason.
_LinkDecoder = Callable[[bytes, int, int], "tuple[int, int] | str"]
_Addr = tuple[Endpoint, Endpoint]


def _ethertype_ip(ethertype: int) -> int:
    """IP version carried by an ethertype, 0 for anything else."""
    return 4 if ethertype == ETHERTYPE_IPV4 else 6 if ethertype == ETHERTYPE_IPV6 else 0


def _after_ethertype(buf: bytes, pos: int, end: int, ethertype: int) -> tuple[int, int] | str:
    """Skip any stacked VLAN tags after an ethertype field at pos - 2; find IPv4/IPv6."""
    while ethertype in VLAN_ETHERTYPES:
        if pos + 4 > end:
            return SKIP_TRUNCATED
        ethertype = _U16.unpack_from(buf, pos + 2)[0]
        pos += 4
    version = _ethertype_ip(ethertype)
    return (pos, version) if version else SKIP_NOT_IP


def _ethernet(buf: bytes, pos: int, end: int) -> tuple[int, int] | str:
    """Ethernet II: 6 + 6 address bytes, then the ethertype."""
    if pos + 14 > end:
        return SKIP_TRUNCATED
    return _after_ethertype(buf, pos + 14, end, _U16.unpack_from(buf, pos + 12)[0])


def _sll(buf: bytes, pos: int, end: int) -> tuple[int, int] | str:
    """Linux cooked v1: 16 bytes, protocol (an ethertype) at 14."""
    if pos + 16 > end:
        return SKIP_TRUNCATED
    return _after_ethertype(buf, pos + 16, end, _U16.unpack_from(buf, pos + 14)[0])


def _sll2(buf: bytes, pos: int, end: int) -> tuple[int, int] | str:
    """Linux cooked v2: 20 bytes, protocol (an ethertype) first."""
    if pos + 20 > end:
        return SKIP_TRUNCATED
    return _after_ethertype(buf, pos + 20, end, _U16.unpack_from(buf, pos)[0])


def _raw(buf: bytes, pos: int, end: int) -> tuple[int, int] | str:
    """Raw IP: the version nibble says which."""
    if pos >= end:
        return SKIP_TRUNCATED
    version = buf[pos] >> 4
    return (pos, version) if version in (4, 6) else SKIP_NOT_IP


def _address_family(family: int) -> int:
    """IP version of a BSD address family, 0 for anything else."""
    return 4 if family == AF_INET else 6 if family in AF_INET6 else 0


def _null(buf: bytes, pos: int, end: int) -> tuple[int, int] | str:
    """BSD NULL: 4-byte AF in the capturing host's byte order, which the file does not record."""
    if pos + 4 > end:
        return SKIP_TRUNCATED
    version = _address_family(int.from_bytes(buf[pos : pos + 4], "little")) or _address_family(
        int.from_bytes(buf[pos : pos + 4], "big")
    )
    return (pos + 4, version) if version else SKIP_NOT_IP


def _loop(buf: bytes, pos: int, end: int) -> tuple[int, int] | str:
    """OpenBSD LOOP: 4-byte AF, big-endian."""
    if pos + 4 > end:
        return SKIP_TRUNCATED
    version = _address_family(int.from_bytes(buf[pos : pos + 4], "big"))
    return (pos + 4, version) if version else SKIP_NOT_IP


def _unsupported(buf: bytes, pos: int, end: int) -> tuple[int, int] | str:
    """A link type this module does not decode."""
    return SKIP_LINK


_LINK_DECODERS: dict[int, _LinkDecoder] = {
    LINKTYPE_NULL: _null,
    LINKTYPE_ETHERNET: _ethernet,
    LINKTYPE_RAW: _raw,
    LINKTYPE_RAW_12: _raw,
    LINKTYPE_RAW_14: _raw,
    LINKTYPE_LOOP: _loop,
    LINKTYPE_LINUX_SLL: _sll,
    LINKTYPE_LINUX_SLL2: _sll2,
}


def _link_decoder(linktype: int) -> _LinkDecoder:
    """The decoder of a stored link type; the low 16 bits only (the rest are FCS flags)."""
    return _LINK_DECODERS.get(linktype & 0xFFFF, _unsupported)


class _UdpDecoder:
    """Finds the UDP payload and the endpoints of a frame; caches Endpoint pairs by raw bytes.

    A relay's capture holds few distinct address pairs and millions of packets: formatting
    addresses once per pair instead of once per packet is most of the reader's speed.
    """

    __slots__ = ("_pairs",)
    MAX_PAIRS = 4096

    def __init__(self) -> None:
        self._pairs: dict[bytes, _Addr] = {}

    def decode(self, buf: bytes, pos: int, end: int, version: int) -> tuple[_Addr, int, int] | str:
        """(endpoints, start, end of the UDP payload in buf) of the IP packet at buf[pos:end], or
        why it is skipped."""
        if version == 4:
            if pos + 20 > end:
                return SKIP_TRUNCATED
            first = buf[pos]
            ihl = (first & 0x0F) * 4
            total = _U16.unpack_from(buf, pos + 2)[0]
            if first >> 4 != 4 or ihl < 20 or total < ihl:
                return SKIP_BAD_IP
            if pos + total > end:
                return SKIP_TRUNCATED
            if buf[pos + 9] != IPPROTO_UDP:
                return SKIP_NOT_UDP
            if _U16.unpack_from(buf, pos + 6)[0] & 0x3FFF:  # MF or a fragment offset
                return SKIP_FRAGMENT
            udp = pos + ihl
            end = pos + total  # drops Ethernet trailer padding and FCS
            key_addrs = buf[pos + 12 : pos + 20]
        elif version == 6:
            if pos + 40 > end:
                return SKIP_TRUNCATED
            payload_len = _U16.unpack_from(buf, pos + 4)[0]
            if buf[pos] >> 4 != 6 or payload_len == 0:  # 0: a jumbogram, never RTP
                return SKIP_BAD_IP
            if pos + 40 + payload_len > end:
                return SKIP_TRUNCATED
            end = pos + 40 + payload_len
            nxt = buf[pos + 6]
            udp = pos + 40
            while nxt != IPPROTO_UDP:
                if udp + 8 > end:
                    return SKIP_BAD_IP
                if nxt in IPV6_EXT_LEN8:
                    length = (buf[udp + 1] + 1) * 8
                elif nxt == IPV6_FRAGMENT:
                    if _U16.unpack_from(buf, udp + 2)[0] & 0xFFF9:  # offset or M
                        return SKIP_FRAGMENT
                    length = 8
                elif nxt == IPV6_AH:
                    length = (buf[udp + 1] + 2) * 4
                else:
                    return SKIP_NOT_UDP
                nxt = buf[udp]
                udp += length
            key_addrs = buf[pos + 8 : pos + 40]
        else:
            return SKIP_NOT_IP
        if udp + 8 > end:
            return SKIP_BAD_UDP
        if _U16.unpack_from(buf, udp + 4)[0] != end - udp:
            return SKIP_BAD_UDP
        key = key_addrs + buf[udp : udp + 4]
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._endpoints(key)
        return pair, udp + 8, end

    def _endpoints(self, key: bytes) -> _Addr:
        """Format and remember the (src, dst) pair of raw addresses + ports."""
        half = (len(key) - 4) // 2
        family = socket.AF_INET if half == 4 else socket.AF_INET6
        src_port, dst_port = struct.unpack_from("!HH", key, 2 * half)
        pair = (
            Endpoint(socket.inet_ntop(family, key[:half]), src_port),
            Endpoint(socket.inet_ntop(family, key[half : 2 * half]), dst_port),
        )
        if len(self._pairs) >= self.MAX_PAIRS:
            self._pairs.clear()
        self._pairs[key] = pair
        return pair


def _read_exact(path: str, size: int) -> bytes:
    """The first size bytes of a file; CaptureError at offset 0 when it is shorter."""
    try:
        with open(path, "rb") as f:
            head = f.read(size)
    except OSError as exc:
        raise CaptureError(f"cannot open: {exc.strerror}", file=path, offset=0) from exc
    if len(head) < size:
        raise CaptureError(
            f"file header truncated ({len(head)} of {size} bytes)", file=path, offset=0
        )
    return head


# --- classic pcap ---------------------------------------------------------------------------


def read_pcap(path: str | os.PathLike[str], stats: ReadStats | None = None) -> Iterator[Datagram]:
    """Every UDP datagram of a classic pcap file, in file order.

    Raises CaptureError (offset 0) at once when the global header is not pcap's. Damage later on
    is skipped (see the module doc) and reported in ``stats.spans`` and ``stats.problems``; a
    truncated last record ends the iteration with a problem. Records whose arrival time is out of
    line are set aside (``records.guard_times``).
    """
    name = os.fspath(path)
    stats = ReadStats() if stats is None else stats
    head = _read_exact(name, PCAP_HEADER_LEN)
    if head[:4] not in PCAP_MAGICS:
        raise CaptureError(f"not a pcap file (magic {head[:4].hex()})", file=name, offset=0)
    order, nanos = PCAP_MAGICS[head[:4]]
    major, _minor, _zone, _sigfigs, snaplen, linktype = struct.unpack(order + "HHiIII", head[4:])
    if major != 2:
        raise CaptureError(f"unsupported pcap version {major}", file=name, offset=0)
    return guard_times(
        _pcap_records(name, order, nanos, max(snaplen, MAX_CAPLEN), linktype, stats), stats
    )


class PcapSync:
    """What a classic pcap reader does at a suspect record: keep it, or skip to the next
    plausible record (shared by the record reader and the batch reader, so both skip alike)."""

    __slots__ = (
        "floor",
        "frac_limit",
        "frac_ns",
        "head",
        "link",
        "max_caplen",
        "name",
        "stats",
        "udp",
    )

    def __init__(
        self, name: str, order: str, nanos: bool, max_caplen: int, linktype: int, stats: ReadStats
    ) -> None:
        self.name = name
        self.head = struct.Struct(order + "IIII")
        self.frac_limit = 1_000_000_000 if nanos else 1_000_000
        self.frac_ns = 1 if nanos else 1000
        self.max_caplen = max_caplen
        self.link = _link_decoder(linktype)
        self.udp = _UdpDecoder().decode
        self.stats = stats
        self.floor = 0  # searches start after the last place they resumed

    def _plausible(
        self, buf: bytes, p: int, eof: bool, ref_ns: int | None, candidate: bool
    ) -> bool:
        """Whether a record starts at buf[p] (buf holds the file from somewhere; eof: up to its
        end). A candidate (found by searching) must hold a UDP datagram and be confirmed by a
        sane record after it close in time (or, as the file's last record, be near ref_ns); a
        suspect the walk reached only needs its length to lead to a sane record close in time
        to it or to ref_ns (its own time is then the guard's to judge)."""
        if p + PCAP_RECORD_LEN > len(buf):
            return False
        sec, frac, caplen, _ = self.head.unpack_from(buf, p)
        end = p + PCAP_RECORD_LEN + caplen
        if caplen > self.max_caplen or frac >= self.frac_limit or end > len(buf):
            return False
        ns = sec * 1_000_000_000 + frac * self.frac_ns
        if candidate:
            if not MIN_UDP_FRAME <= caplen <= CANDIDATE_MAX:
                return False
            found = self.link(buf, p + PCAP_RECORD_LEN, end)
            if isinstance(found, str) or isinstance(self.udp(buf, found[0], end, found[1]), str):
                return False
        near_ref = ref_ns is None or abs(ns - ref_ns) <= JUMP_NS
        if end + PCAP_RECORD_LEN > len(buf):  # the file's last record (or a cut header follows)
            return eof and (near_ref or not candidate)
        sec, frac, caplen, _ = self.head.unpack_from(buf, end)
        if caplen > self.max_caplen or frac >= self.frac_limit:
            return False
        after = sec * 1_000_000_000 + frac * self.frac_ns
        if abs(after - ns) <= JUMP_NS:
            return True
        return not candidate and ref_ns is not None and abs(after - ref_ns) <= JUMP_NS

    def check(
        self, f: BinaryIO, offset: int, prev_offset: int | None, prev_ns: int | None
    ) -> int | None:
        """Decide about the suspect record at offset: offset when it is kept, else where
        reading resumes (the damage reported), None when nothing plausible follows."""
        f.seek(offset)
        caplen = self.head.unpack(f.read(PCAP_RECORD_LEN))[2]
        if caplen <= self.max_caplen:
            f.seek(offset)
            want = 2 * PCAP_RECORD_LEN + caplen
            buf = f.read(want)
            if self._plausible(buf, 0, len(buf) < want, prev_ns, False):
                return offset
            reason = "implausible record (its time or the record after it)"
        else:
            reason = f"impossible captured length {caplen}"
        start = offset + 1 if prev_offset is None else prev_offset + PCAP_RECORD_LEN
        resume = self._search(f, max(start, self.floor), prev_ns)
        if resume is None:
            self.stats.problems.append(CaptureError(reason, file=self.name, offset=offset))
        elif resume > offset or prev_offset is None:
            self.stats.skip_span(self.name, offset, resume, reason)
        else:  # the record before ran over the next ones: its length was the corrupt one
            self.stats.skip_span(
                self.name,
                prev_offset,
                resume,
                f"record length runs past the next record ({reason})",
            )
        return resume

    def overrun(
        self, f: BinaryIO, offset: int, caplen: int, have: int, prev_ns: int | None
    ) -> int | None:
        """The record at offset runs past the end of the file: where reading resumes (a
        corrupt length, reported) or None (a truncated last record, reported)."""
        resume = self._search(f, max(offset + PCAP_RECORD_LEN, self.floor), prev_ns)
        if resume is None:
            message = f"truncated record ({have} of {caplen} bytes)"
            self.stats.problems.append(CaptureError(message, file=self.name, offset=offset))
        else:
            reason = f"captured length {caplen} runs past the end of the file"
            self.stats.skip_span(self.name, offset, resume, reason)
        return resume

    def _search(self, f: BinaryIO, start: int, ref_ns: int | None) -> int | None:
        """The offset of the first plausible record at or after start, or None."""
        pos = start
        span = SEARCH_FIRST
        while True:
            want = span + 2 * PCAP_RECORD_LEN + CANDIDATE_MAX
            f.seek(pos)
            buf = f.read(want)
            eof = len(buf) < want
            last = len(buf) - PCAP_RECORD_LEN if eof else span - 1
            if last < 0:
                return None
            for q in self._candidates(buf, last + 1).tolist():
                if self._plausible(buf, q, eof, ref_ns, True):
                    self.floor = pos + q + 1
                    return pos + q
            if eof:
                return None
            pos += span
            span = min(2 * span, SEARCH_CHUNK)

    def _candidates(self, buf: bytes, count: int) -> npt.NDArray[np.intp]:
        """Positions below count whose captured length could be a UDP datagram's and whose
        fraction of a second is in range: where a record might start."""
        b = np.frombuffer(buf, np.uint8).astype(np.int64)
        little = self.head.format[0] == "<"

        def u32(at: int) -> npt.NDArray[np.int64]:
            parts = [b[at + k : at + k + count] for k in range(4)]
            if not little:
                parts.reverse()
            return parts[0] | parts[1] << 8 | parts[2] << 16 | parts[3] << 24

        caplen = u32(8)
        ok = (caplen >= MIN_UDP_FRAME) & (caplen <= CANDIDATE_MAX) & (u32(4) < self.frac_limit)
        return np.flatnonzero(ok)


def _pcap_records(
    name: str, order: str, nanos: bool, max_caplen: int, linktype: int, stats: ReadStats
) -> Iterator[Datagram]:
    """The record loop of read_pcap, after the global header was checked."""
    record = struct.Struct(order + "IIII")
    unpack = record.unpack
    frac_ns = 1 if nanos else 1000
    link = _link_decoder(linktype)
    udp = _UdpDecoder().decode
    sync = PcapSync(name, order, nanos, max_caplen, linktype, stats)
    skipped = stats.skipped
    offset = PCAP_HEADER_LEN
    prev_offset: int | None = None
    prev_ns: int | None = None
    with open(name, "rb", buffering=BUFFER_SIZE) as f:
        f.seek(offset)
        read = f.read
        while True:
            head = read(PCAP_RECORD_LEN)
            if len(head) < PCAP_RECORD_LEN:
                if head:
                    stats.problems.append(
                        CaptureError(
                            f"truncated record header ({len(head)} of 16 bytes)",
                            file=name,
                            offset=offset,
                        )
                    )
                return
            sec, frac, caplen, _orig_len = unpack(head)
            ns = sec * 1_000_000_000 + frac * frac_ns
            if caplen > max_caplen or (
                prev_ns is not None and not -JUMP_NS <= ns - prev_ns <= JUMP_NS
            ):
                resume = sync.check(f, offset, prev_offset, prev_ns)
                if resume is None:
                    return
                f.seek(resume + (PCAP_RECORD_LEN if resume == offset else 0))
                if resume != offset:
                    offset = resume
                    continue
            frame = read(caplen)
            if len(frame) < caplen:
                resume = sync.overrun(f, offset, caplen, len(frame), prev_ns)
                if resume is None:
                    return
                f.seek(resume)
                offset = resume
                continue
            prev_offset, prev_ns = offset, ns
            stats.records += 1
            found = link(frame, 0, caplen)
            if isinstance(found, str):
                skipped[found] += 1
            else:
                got = udp(frame, found[0], caplen, found[1])
                if isinstance(got, str):
                    skipped[got] += 1
                else:
                    (src, dst), lo, hi = got
                    stats.datagrams += 1
                    yield Datagram(ns, frame[lo:hi], src, dst, name, offset)
            offset += PCAP_RECORD_LEN + caplen


# --- pcapng ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Interface:
    """What a pcapng IDB says about the packets of one interface."""

    link: _LinkDecoder
    tsresol: int  # the if_tsresol byte: 10^-n, or 2^-(n & 0x7F) with the top bit set
    tsoffset_ns: int

    def arrival_ns(self, units: int) -> int:
        """Timestamp units to ns since the epoch, exactly (floor), in integer arithmetic."""
        n = self.tsresol
        if n & 0x80:
            ns = (units * 1_000_000_000) >> (n & 0x7F)
        elif n <= 9:
            ns = units * 10 ** (9 - n)
        else:
            ns = units // 10 ** (n - 9)
        return ns + self.tsoffset_ns


def _options(body: bytes, pos: int, order: str) -> Iterator[tuple[int, bytes]]:
    """The (code, value) options of a block body from pos; stops at opt_endofopt or bad lengths."""
    head = struct.Struct(order + "HH")
    while pos + 4 <= len(body):
        code, length = head.unpack_from(body, pos)
        if code == OPT_ENDOFOPT or pos + 4 + length > len(body):
            return
        yield code, body[pos + 4 : pos + 4 + length]
        pos += 4 + (length + 3) // 4 * 4


def _interface(body: bytes, order: str) -> _Interface:
    """An IDB body (after type and length) as an _Interface: link type, resolution, offset."""
    linktype = struct.unpack_from(order + "H", body)[0]
    tsresol, tsoffset = 6, 0
    for code, value in _options(body, 8, order):
        if code == OPT_IF_TSRESOL and len(value) == 1:
            tsresol = value[0]
        elif code == OPT_IF_TSOFFSET and len(value) == 8:
            tsoffset = struct.unpack(order + "q", value)[0]
    return _Interface(_link_decoder(linktype), tsresol, tsoffset * 1_000_000_000)


def _section_order(bom: bytes) -> str | None:
    """The byte order a Section Header Block's byte-order magic announces, or None."""
    if bom == b"\x4d\x3c\x2b\x1a":
        return "<"
    if bom == b"\x1a\x2b\x3c\x4d":
        return ">"
    return None


def read_pcapng(path: str | os.PathLike[str], stats: ReadStats | None = None) -> Iterator[Datagram]:
    """Every UDP datagram of a pcapng file (all sections and interfaces), in file order.

    Raises CaptureError (offset 0) at once when the file does not start with a valid Section
    Header Block. Damage later on is skipped to the next plausible block and reported in
    ``stats.spans`` and ``stats.problems``; a truncated last block ends the iteration with a
    problem. Packets whose arrival time is out of line are set aside (``records.guard_times``).
    A Simple Packet Block has no timestamp: it takes the arrival time of the packet before it.
    """
    name = os.fspath(path)
    stats = ReadStats() if stats is None else stats
    head = _read_exact(name, 28)
    if head[:4] != PCAPNG_MAGIC:
        raise CaptureError(f"not a pcapng file (magic {head[:4].hex()})", file=name, offset=0)
    order = _section_order(head[8:12])
    if order is None:
        raise CaptureError(f"bad pcapng byte-order magic {head[8:12].hex()}", file=name, offset=0)
    length = struct.unpack_from(order + "I", head, 4)[0]
    major = struct.unpack_from(order + "H", head, 12)[0]
    if length < 28 or length % 4 or length > MAX_BLOCK_LEN or major != 1:
        raise CaptureError(
            f"bad pcapng section header (length {length}, version {major})", file=name, offset=0
        )
    return guard_times(_pcapng_blocks(name, stats), stats)


def _pcapng_blocks(name: str, stats: ReadStats) -> Iterator[Datagram]:
    """The block loop of read_pcapng, after the first section header was checked."""
    udp = _UdpDecoder().decode
    skipped = stats.skipped
    order = "<"
    interfaces: list[_Interface] = []
    last_ns: int | None = None
    offset = 0

    def stop(message: str) -> None:
        stats.problems.append(CaptureError(message, file=name, offset=offset))

    def resync(f: BinaryIO, message: str) -> bool:
        """Skip damage at offset to the next plausible block (True), or report it (False)."""
        nonlocal offset
        resume = _pcapng_search(f, offset + 1, order)
        if resume is None:
            stop(message)
            return False
        stats.skip_span(name, offset, resume, message)
        f.seek(resume)
        offset = resume
        return True

    with open(name, "rb", buffering=BUFFER_SIZE) as f:
        read = f.read
        while True:
            head = read(8)
            if len(head) < 8:
                if head:
                    stop(f"truncated block header ({len(head)} of 8 bytes)")
                return
            if head[:4] == PCAPNG_MAGIC:
                bom = read(4)
                new_order = _section_order(bom)
                if new_order is None:
                    if resync(f, f"bad byte-order magic {bom.hex()} in section header"):
                        continue
                    return
                order = new_order
                interfaces = []
                head += bom
            block_type, length = struct.unpack_from(order + "II", head)
            if length < 12 + len(head) - 8 or length % 4 or length > MAX_BLOCK_LEN:
                if resync(f, f"impossible block length {length}"):
                    continue
                return
            rest = read(length - len(head))
            if len(rest) < length - len(head):
                if resync(f, f"truncated block ({len(head) + len(rest)} of {length} bytes)"):
                    continue
                return
            if struct.unpack_from(order + "I", rest, len(rest) - 4)[0] != length:
                if resync(f, "block trailer length differs from its header"):
                    continue
                return
            body = rest[:-4]  # after type and length (after the byte-order magic for an SHB)
            if block_type == BLOCK_SHB:
                if len(body) < 12 or struct.unpack_from(order + "H", body)[0] != 1:
                    if resync(f, "unsupported pcapng section version"):
                        continue
                    return
            elif block_type == BLOCK_IDB:
                if len(body) < 8:
                    skipped[SKIP_BAD_BLOCK] += 1
                else:
                    interfaces.append(_interface(body, order))
            elif block_type in (BLOCK_EPB, BLOCK_PB, BLOCK_SPB):
                stats.records += 1
                if block_type == BLOCK_SPB:
                    start = 4
                    if len(body) < start:
                        skipped[SKIP_BAD_BLOCK] += 1
                        offset += length
                        continue
                    caplen = min(struct.unpack_from(order + "I", body)[0], len(body) - start)
                    index, units = 0, None
                else:
                    start = 20
                    if len(body) < start:
                        skipped[SKIP_BAD_BLOCK] += 1
                        offset += length
                        continue
                    if block_type == BLOCK_EPB:
                        index, high, low, caplen = struct.unpack_from(order + "IIII", body)
                    else:
                        index, _drops, high, low, caplen = struct.unpack_from(order + "HHIII", body)
                    units = high << 32 | low
                end = start + caplen
                if end > len(body):
                    skipped[SKIP_BAD_BLOCK] += 1
                elif index >= len(interfaces):
                    skipped[SKIP_NO_INTERFACE] += 1
                else:
                    interface = interfaces[index]
                    if units is not None:
                        last_ns = interface.arrival_ns(units)
                    found = interface.link(body, start, end)
                    if isinstance(found, str):
                        skipped[found] += 1
                    else:
                        got = udp(body, found[0], end, found[1])
                        if isinstance(got, str):
                            skipped[got] += 1
                        elif last_ns is None:
                            skipped[SKIP_UNTIMED] += 1
                        else:
                            (src, dst), lo, hi = got
                            stats.datagrams += 1
                            yield Datagram(last_ns, body[lo:hi], src, dst, name, offset)
            offset += length


#: The longest block a search after damage resumes at: a packet block of a UDP datagram.
CANDIDATE_BLOCK = CANDIDATE_MAX + 256


def _block_at(buf: bytes, q: int, order: str) -> tuple[int, str] | None:
    """(length, byte order) of a plausible pcapng block at buf[q], else None: known type, sane
    length, trailer equal to it (where buf holds the whole block)."""
    if q + 12 > len(buf):
        return None
    if buf[q : q + 4] == PCAPNG_MAGIC:
        found = _section_order(buf[q + 8 : q + 12])
        if found is None:
            return None
        order = found
    block_type, length = struct.unpack_from(order + "II", buf, q)
    if block_type not in KNOWN_BLOCKS or length < 12 or length % 4 or length > MAX_BLOCK_LEN:
        return None
    if q + length <= len(buf) and struct.unpack_from(order + "I", buf, q + length - 4)[0] != length:
        return None
    return length, order


def _pcapng_search(f: BinaryIO, start: int, order: str) -> int | None:
    """The offset of the first plausible block at or after start (its type known, its lengths
    agreeing, and the block after it plausible too or the end of the file), or None."""
    pos = start
    span = SEARCH_FIRST
    little = order == "<"
    while True:
        want = span + 2 * CANDIDATE_BLOCK
        f.seek(pos)
        buf = f.read(want)
        eof = len(buf) < want
        count = len(buf) - 11 if eof else span
        if count <= 0:
            return None
        b = np.frombuffer(buf, np.uint8).astype(np.int64)
        parts = [b[4 + k : 4 + k + count] for k in range(4)]
        if not little:
            parts.reverse()
        length = parts[0] | parts[1] << 8 | parts[2] << 16 | parts[3] << 24
        at = np.arange(count)
        ok = (length >= 12) & (length <= CANDIDATE_BLOCK) & (length % 4 == 0)
        ok &= at + length <= len(buf)
        candidates = set(np.flatnonzero(ok).tolist())
        shb = buf.find(PCAPNG_MAGIC)
        while 0 <= shb < count:
            candidates.add(shb)
            shb = buf.find(PCAPNG_MAGIC, shb + 1)
        for q in sorted(candidates):
            found = _block_at(buf, q, order)
            if found is None or q + found[0] > len(buf) or found[0] > CANDIDATE_BLOCK:
                continue
            end = q + found[0]
            if len(buf) - end < 12 and eof or _block_at(buf, end, found[1]) is not None:
                return pos + q
        if eof:
            return None
        pos += span
        span = min(2 * span, SEARCH_CHUNK)
