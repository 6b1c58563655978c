"""Datagrams in batches: columns over one buffer, so later stages work with arrays, not objects.

A batch holds a few thousand datagrams of one capture file in file order: their bytes in one
buffer, and per datagram its start and end in it, arrival time, record offset (for error
messages) and an index into the file's table of (source, destination) address pairs. Classic pcap
with Ethernet, Linux cooked or raw-IP framing and plain IPv4/UDP is cut into columns by array
operations (the common relay capture); every other record, format and link type goes through the
record-by-record readers, so both paths skip, count and report damage the same way. The pcap
batch path shares the record reader's ``PcapSync`` (what to do at a suspect record) and
``ArrivalGuard`` (which times are out of line): both are consulted only where the array checks
find a suspect record or a jump in time, so an undamaged file costs what it did.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import CaptureError
from . import pcap as _pcap
from .records import OUT_OF_LINE_NS, ArrivalGuard, Datagram, Endpoint, ReadStats, set_aside

__all__ = ["DatagramBatch", "batches_of", "read_batches"]

Ints = npt.NDArray[np.int64]
Pair = tuple[Endpoint | None, Endpoint | None]
# _pcap._UdpDecoder.decode: ((src, dst), payload start, end) or why the frame is skipped
_UdpDecode = Callable[[bytes, int, int, int], "tuple[tuple[Endpoint, Endpoint], int, int] | str"]

#: Bytes of a file read per pcap batch.
CHUNK_BYTES = 1 << 22
#: Datagrams per batch where records are read one by one.
BATCH_DATAGRAMS = 4096
_U32 = {"<": struct.Struct("<I"), ">": struct.Struct(">I")}


@dataclass(frozen=True, slots=True)
class DatagramBatch:
    """Datagrams of one file in file order: datagram i is ``buf[start[i]:end[i]]``."""

    file: str
    buf: bytes
    start: Ints
    end: Ints
    arrival_ns: Ints
    offset: Ints
    pair: npt.NDArray[np.int32]
    pairs: list[Pair]  # the file's address pairs; grows as the file is read

    def __len__(self) -> int:
        return len(self.start)

    def data(self, i: int) -> bytes:
        return self.buf[self.start[i] : self.end[i]]

    def datagram(self, i: int) -> Datagram:
        src, dst = self.pairs[self.pair[i]]
        return Datagram(
            int(self.arrival_ns[i]), self.data(i), src, dst, self.file, int(self.offset[i])
        )


class _PairTable:
    """Numbers address pairs in order of first sight."""

    def __init__(self) -> None:
        self.pairs: list[Pair] = []
        self._index: dict[Pair, int] = {}

    def __call__(self, src: Endpoint | None, dst: Endpoint | None) -> int:
        key = (src, dst)
        found = self._index.get(key)
        if found is None:
            found = self._index[key] = len(self.pairs)
            self.pairs.append(key)
        return found


#: Arrival times outside this range (years 1678-2262) are a corrupt record's; they are skipped.
INT64_LIMIT = 1 << 63
SKIP_TIME = "arrival time out of range"


def batches_of(
    datagrams: Iterable[Datagram],
    file: str,
    stats: ReadStats | None = None,
    size: int = BATCH_DATAGRAMS,
) -> Iterator[DatagramBatch]:
    """Group datagrams (of one file, in file order) into batches; those whose arrival time does
    not fit 64 bits are skipped (counted in stats)."""
    table = _PairTable()
    chunk: list[Datagram] = []

    def batch() -> DatagramBatch:
        lengths = np.fromiter((len(d.data) for d in chunk), np.int64, len(chunk))
        end = np.cumsum(lengths)
        return DatagramBatch(
            file,
            b"".join([d.data for d in chunk]),
            end - lengths,
            end,
            np.fromiter((d.arrival_ns for d in chunk), np.int64, len(chunk)),
            np.fromiter((d.offset for d in chunk), np.int64, len(chunk)),
            np.fromiter((table(d.src, d.dst) for d in chunk), np.int32, len(chunk)),
            table.pairs,
        )

    for d in datagrams:
        if not -INT64_LIMIT <= d.arrival_ns < INT64_LIMIT:
            if stats is not None:
                stats.skip(SKIP_TIME)
            continue
        chunk.append(d)
        if len(chunk) >= size:
            yield batch()
            chunk = []
    if chunk:
        yield batch()


def read_batches(
    path: str | os.PathLike[str],
    stats: ReadStats | None = None,
    datagrams: Iterable[Datagram] | None = None,
) -> Iterator[DatagramBatch]:
    """Every datagram of a capture file (any format) in batches, in file order.

    datagrams: the file's datagrams when the caller already opened it another way (.mjr).
    Raises CaptureError (offset 0) at once when the file is not a capture; later damage is
    skipped and reported in ``stats.spans`` and ``stats.problems`` as the record readers do, and
    the same datagrams whose arrival times are out of line are set aside.
    """
    from . import read_capture  # the package picks the reader by magic

    name = os.fspath(path)
    stats = ReadStats() if stats is None else stats
    if datagrams is not None:
        return batches_of(datagrams, name, stats)
    head = _pcap._read_exact(name, _pcap.PCAP_HEADER_LEN) if _is_pcap(name) else None
    if head is None:
        return batches_of(read_capture(name, stats), name, stats)
    order, nanos = _pcap.PCAP_MAGICS[head[:4]]
    major, _minor, _zone, _sigfigs, snaplen, linktype = struct.unpack(order + "HHiIII", head[4:])
    if major != 2:
        raise CaptureError(f"unsupported pcap version {major}", file=name, offset=0)
    return _guard_batches(
        _pcap_batches(name, order, nanos, max(snaplen, _pcap.MAX_CAPLEN), linktype, stats), stats
    )


def _select(batch: DatagramBatch, rows: npt.NDArray[np.intp]) -> DatagramBatch:
    """The datagrams of a batch at rows."""
    return DatagramBatch(
        batch.file,
        batch.buf,
        batch.start[rows],
        batch.end[rows],
        batch.arrival_ns[rows],
        batch.offset[rows],
        batch.pair[rows],
        batch.pairs,
    )


def _guard_batches(batches: Iterable[DatagramBatch], stats: ReadStats) -> Iterator[DatagramBatch]:
    """records.guard_times over batches: the same datagrams set aside. A batch whose last times
    need the next batch's to be decided is held until it arrives (rare: only after a jump)."""
    guard = ArrivalGuard()
    held: list[tuple[DatagramBatch, npt.NDArray[np.bool_]]] = []  # (batch, rows kept)
    first = 0  # the first undecided row of held[0]; every row of the later held batches is too
    limit = OUT_OF_LINE_NS

    def decide(final: bool) -> Iterator[DatagramBatch]:
        """Settle the undecided rows; yield the held batches that are then wholly decided."""
        nonlocal first, held
        parts = [held[0][0].arrival_ns[first:]] + [b.arrival_ns for b, _ in held[1:]]
        sizes = np.cumsum([len(p) for p in parts])
        aside, decided = _settle_rows(guard, np.concatenate(parts), final)
        for x in aside:
            h = int(np.searchsorted(sizes, x, "right"))
            held[h][1][x - (int(sizes[h - 1]) if h else -first)] = False
        set_aside(stats, len(aside))
        done = int(np.searchsorted(sizes, decided, "right"))  # batches wholly decided
        for batch, keep in held[:done]:
            yield batch if keep.all() else _select(batch, np.flatnonzero(keep))
        first = decided - (int(sizes[done - 1]) if done else -first)
        held = held[done:]

    for batch in batches:
        times = batch.arrival_ns
        if not held and guard.last is not None and len(times):
            steps = np.abs(np.diff(times, prepend=guard.last))
            if int(steps.max()) <= limit:
                guard.gap, guard.last = int(steps[-1]), int(times[-1])
                yield batch
                continue
        held.append((batch, np.ones(len(batch), np.bool_)))
        yield from decide(False)
    if held:
        yield from decide(True)


#: Rows looked at per step of _settle_rows: the fast rule over arrays, ArrivalGuard for the rest.
_SETTLE_WINDOW = 4096


def _settle_rows(
    guard: ArrivalGuard, times: npt.NDArray[np.int64], final: bool
) -> tuple[list[int], int]:
    """ArrivalGuard.settle over an array: rows within OUT_OF_LINE_NS of the last kept time are
    kept by array operations, the guard decides the others."""
    aside: list[int] = []
    n = len(times)
    i = 0
    while i < n:
        if guard.last is not None:
            window = times[i : i + _SETTLE_WINDOW]
            steps = np.abs(np.diff(window, prepend=guard.last))
            far = np.flatnonzero(steps > OUT_OF_LINE_NS)
            j = int(far[0]) if len(far) else len(window)
            if j:
                guard.gap, guard.last = int(steps[j - 1]), int(window[j - 1])
                i += j
                continue
        a, d = guard.settle(times[i : i + 3].tolist(), final and i + 3 >= n)
        aside += [i + x for x in a]
        i += d
        if not d:
            break
    return aside, i


def _is_pcap(name: str) -> bool:
    try:
        with open(name, "rb") as f:
            return f.read(4) in _pcap.PCAP_MAGICS
    except OSError as exc:
        raise CaptureError(f"cannot open: {exc.strerror}", file=name, offset=0) from exc


# Where the IP header starts after the link header, and where the link header keeps the
# ethertype (None: the IP version nibble says it), for the link types cut by array operations.
_FAST_LINKS: dict[int, tuple[int, int | None]] = {
    _pcap.LINKTYPE_ETHERNET: (14, 12),
    _pcap.LINKTYPE_LINUX_SLL: (16, 14),
    _pcap.LINKTYPE_LINUX_SLL2: (20, 0),
    _pcap.LINKTYPE_RAW: (0, None),
    _pcap.LINKTYPE_RAW_12: (0, None),
    _pcap.LINKTYPE_RAW_14: (0, None),
}


def _u16(b: npt.NDArray[np.uint8], at: Ints) -> Ints:
    return (b[at].astype(np.int64) << 8) | b[at + 1]


def _u32(b: npt.NDArray[np.uint8], at: Ints, order: str) -> Ints:
    parts = [b[at + k].astype(np.int64) for k in range(4)]
    if order == ">":
        parts.reverse()
    return parts[0] | parts[1] << 8 | parts[2] << 16 | parts[3] << 24


def _pcap_batches(
    name: str, order: str, nanos: bool, max_caplen: int, linktype: int, stats: ReadStats
) -> Iterator[DatagramBatch]:
    """Classic pcap, a chunk of the file at a time: the record walk in Python (each record's
    length says where the next begins), everything else over arrays. Suspect records go to the
    same PcapSync as in the record reader, in the same order, so both skip the same damage."""
    caplen_at = _U32[order].unpack_from
    link = _pcap._link_decoder(linktype)
    fast = _FAST_LINKS.get(linktype & 0xFFFF)
    udp = _pcap._UdpDecoder().decode
    sync = _pcap.PcapSync(name, order, nanos, max_caplen, linktype, stats)
    table = _PairTable()
    v4_pairs: dict[bytes, int] = {}
    frac_ns = 1 if nanos else 1000
    head_len = _pcap.PCAP_RECORD_LEN
    jump = _pcap.JUMP_NS
    prev_offset: int | None = None
    prev_ns: int | None = None
    file_offset = _pcap.PCAP_HEADER_LEN  # of the chunk's first byte
    chunk = CHUNK_BYTES
    with open(name, "rb", buffering=0) as f:
        while True:
            f.seek(file_offset)  # a record cut by the last chunk is read again whole
            buf = f.read(chunk)
            eof = len(buf) < chunk
            chunk = CHUNK_BYTES
            records: list[int] = []
            append = records.append
            pos = 0
            size = len(buf)
            limit = size - head_len
            while pos <= limit:
                after = pos + head_len + caplen_at(buf, pos + 8)[0]
                if after > size:
                    break
                append(pos)
                pos = after
            # the walked records and a whole header after them, checked as the record reader does
            heads = np.array(records + ([pos] if pos <= limit else []), np.int64)
            b = np.frombuffer(buf, np.uint8)
            arrival = _u32(b, heads, order) * 1_000_000_000 + _u32(b, heads + 4, order) * frac_ns
            before = np.empty_like(arrival)
            before[1:] = arrival[:-1]
            suspect = _u32(b, heads + 8, order) > max_caplen
            if len(heads) and prev_ns is not None:
                before[0] = prev_ns
                suspect |= np.abs(arrival - before) > jump
            elif len(heads) > 1:
                suspect[1:] |= np.abs(arrival[1:] - before[1:]) > jump
            good = len(heads)
            resume: int | None = None
            for k in np.flatnonzero(suspect).tolist():
                at = file_offset + int(heads[k])
                if k:
                    found = sync.check(f, at, file_offset + int(heads[k - 1]), int(arrival[k - 1]))
                else:
                    found = sync.check(f, at, prev_offset, prev_ns)
                if found != at:
                    good, resume = k, found
                    break
            walked = min(good, len(records))
            if walked:
                yield _cut(
                    name,
                    buf,
                    np.array(records[:walked], np.int64),
                    file_offset,
                    order,
                    frac_ns,
                    link,
                    fast,
                    udp,
                    table,
                    v4_pairs,
                    stats,
                )
                prev_offset = file_offset + records[walked - 1]
                prev_ns = int(arrival[walked - 1])
            if good < len(heads):  # damage: skipped to resume, or nothing plausible after it
                if resume is None:
                    return
                file_offset = resume
                continue
            if pos > limit:  # the chunk ends at a record boundary or inside a record header
                if eof:
                    if pos < size:
                        stats.problems.append(
                            CaptureError(
                                f"truncated record header ({size - pos} of 16 bytes)",
                                file=name,
                                offset=file_offset + pos,
                            )
                        )
                    return
                file_offset += pos
                continue
            caplen = caplen_at(buf, pos + 8)[0]  # a record the chunk does not hold whole
            if eof:
                resume = sync.overrun(f, file_offset + pos, caplen, size - pos - head_len, prev_ns)
                if resume is None:
                    return
                file_offset = resume
                continue
            if pos == 0:  # a record larger than a chunk: read it whole
                chunk = max(CHUNK_BYTES, head_len + caplen)
            file_offset += pos


def _cut(
    name: str,
    buf: bytes,
    rec: Ints,
    file_offset: int,
    order: str,
    frac_ns: int,
    link: _pcap._LinkDecoder,
    fast: tuple[int, int | None] | None,
    udp: _UdpDecode,
    table: _PairTable,
    v4_pairs: dict[bytes, int],
    stats: ReadStats,
) -> DatagramBatch:
    """The UDP datagrams of the records starting at rec (record-header offsets in buf)."""
    b = np.frombuffer(buf, np.uint8)
    n = len(rec)
    stats.records += n
    arrival = _u32(b, rec, order) * 1_000_000_000 + _u32(b, rec + 4, order) * frac_ns
    caplen = _u32(b, rec + 8, order)
    frame = rec + _pcap.PCAP_RECORD_LEN
    start = np.zeros(n, np.int64)
    end = np.zeros(n, np.int64)
    pair = np.zeros(n, np.int32)
    simple = np.zeros(n, np.bool_)
    if fast is not None:
        ip_at, type_at = fast
        cand = np.flatnonzero(caplen >= ip_at + 28)  # only these hold the headers looked at
        ip = frame[cand] + ip_at
        ok = b[ip] == 0x45
        if type_at is not None:
            ok &= _u16(b, frame[cand] + type_at) == _pcap.ETHERTYPE_IPV4
        total = _u16(b, ip + 2)
        ok &= (
            (b[ip + 9] == _pcap.IPPROTO_UDP)
            & ((_u16(b, ip + 6) & 0x3FFF) == 0)
            & (total >= 28)
            & (ip_at + total <= caplen[cand])
            & (_u16(b, ip + 24) == total - 20)
        )
        rows = cand[ok]
        simple[rows] = True
        if len(rows):
            at = ip[ok]
            start[rows] = at + 28
            end[rows] = at + total[ok]
            # (src address, dst address, ports) of each datagram as one 12-byte key
            keys = np.empty((len(rows), 12), np.uint8)
            for k in range(8):
                keys[:, k] = b[at + 12 + k]
            for k in range(4):
                keys[:, 8 + k] = b[at + 20 + k]
            unique, inverse = np.unique(keys.view("V12").ravel(), return_inverse=True)
            ids = np.empty(len(unique), np.int32)
            for u, key in enumerate(unique.tolist()):
                known = v4_pairs.get(key)
                if known is None:
                    src, dst = _v4_pair(key)
                    known = v4_pairs[key] = table(src, dst)
                ids[u] = known
            pair[rows] = ids[inverse.ravel()]
    for i in np.flatnonzero(~simple).tolist():
        f0 = int(frame[i])
        fend = f0 + int(caplen[i])
        found = link(buf, f0, fend)
        if isinstance(found, str):
            stats.skip(found)
            continue
        got = udp(buf, found[0], fend, found[1])
        if isinstance(got, str):
            stats.skip(got)
            continue
        (src, dst), s, e = got
        start[i], end[i], pair[i] = s, e, table(src, dst)
        simple[i] = True
    rows = np.flatnonzero(simple)
    stats.datagrams += len(rows)
    return DatagramBatch(
        name,
        buf,
        start[rows],
        end[rows],
        arrival[rows],
        rec[rows] + file_offset,
        pair[rows],
        table.pairs,
    )


def _v4_pair(key: bytes) -> Pair:
    src_port, dst_port = struct.unpack_from("!HH", key, 8)
    return (
        Endpoint(".".join(map(str, key[0:4])), src_port),
        Endpoint(".".join(map(str, key[4:8])), dst_port),
    )
