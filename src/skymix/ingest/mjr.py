"""Janus ``.mjr`` recordings: one RTP stream per file, and the videoroom names that group them.

Formats (meetecho/janus-gateway ``record.c``, read the way ``janus-pp-rec.c`` reads them; all
integers big-endian)::

    MJR00002  "MJR00002" u16 len, JSON info;  frames "MEET" u32 ms, u16 len, len bytes
    MJR00001  "MJR00001" u16 len, JSON info;  frames "MEETECHO" u16 len, len bytes
    legacy    "MEETECHO" u16 5, "audio"/"video"/"data";  frames as MJR00001

Timing. MJR00002 records each frame's time as ms since the first frame (a monotonic clock) and
the first frame's real time as ``u`` (µs): arrival_ns = (u + ms * 1000) * 1000, as ``mjr2pcap``
computes it. The older formats record no per-frame time, so it is derived from the RTP
timestamps (unwrapped, at the codec's clock rate) counted from the first packet, anchored at
``u`` (MJR00001) or at the time in a videoroom file name (legacy; else at 0, the epoch).
``MjrInfo.timing`` says which: ``"recorded"`` or ``"rtp"``, and ``first_us`` is None when there
was no anchor. Janus rewrites RTP timestamps to run on across pauses, so the derived times follow
the recording, not packet jitter.

Data-channel recordings (``t = "d"``) hold no RTP: their frames are skipped and counted.

Damage. A corrupt frame length or marker does not end the recording: the reader resumes at the
next frame marker whose frame fits the file and is followed by another marker (or the end), and
reports the bytes skipped in ``ReadStats.spans``; a frame whose length runs over the next marker
is cut there. Frames whose time is out of line (a corrupt ``ms`` or RTP timestamp) are set aside
(see ``records.ArrivalGuard``). A truncated last frame is the end of the recording, as before.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from ..errors import CaptureError
from .records import OUT_OF_LINE_NS, ArrivalGuard, Datagram, ReadStats, guard_times, set_aside

__all__ = [
    "MJR_MAGICS",
    "MjrInfo",
    "MjrRecording",
    "VideoroomName",
    "parse_videoroom_name",
    "read_mjr",
]

MJR2 = b"MJR00002"
MJR1 = b"MJR00001"
LEGACY = b"MEETECHO"
#: The first eight bytes of the three .mjr formats.
MJR_MAGICS = (MJR2, MJR1, LEGACY)
FRAME2 = b"MEET"
KINDS: dict[str, Literal["audio", "video", "data"]] = {"a": "audio", "v": "video", "d": "data"}
#: RTP clock rates of Janus's codec names (janus_audiocodec_name / janus_videocodec_name).
CLOCK_RATES = {
    "opus": 48000,
    "multiopus": 48000,
    "pcmu": 8000,
    "pcma": 8000,
    "g711": 8000,
    "g722": 8000,
    "l16": 16000,
    "l16-48": 48000,
}
VIDEO_CLOCK = 90000
RTP_HEADER_LEN = 12
SKIP_DATA = "data frame"
SKIP_SHORT = "frame shorter than an RTP header"
BUFFER_SIZE = 1 << 20
#: Bytes examined by the first and the largest read of a search for the next frame marker.
SEARCH_FIRST = 1 << 14
SEARCH_CHUNK = 1 << 20
_FRAME2 = struct.Struct("!4sIH")
_FRAME1 = struct.Struct("!8sH")


@dataclass(frozen=True, slots=True)
class MjrInfo:
    """The info header of a recording.

    kind, codec (Janus's name: opus, vp8, h264, ...), fmtp, extmap {id: uri}; created_us (``s``)
    and first_us (``u``: real time of the first frame), µs since the epoch, None when the format
    does not say; e2ee (``e``); raw: the JSON object as written. format: which of the three
    layouts; timing: "recorded" (per-frame times) or "rtp" (derived from RTP timestamps).
    """

    kind: Literal["audio", "video", "data"]
    codec: str
    fmtp: str | None
    extmap: Mapping[int, str]
    created_us: int | None
    first_us: int | None
    e2ee: bool
    raw: Mapping[str, Any] = field(repr=False)
    format: Literal["MJR00002", "MJR00001", "legacy"]
    timing: Literal["recorded", "rtp"]

    @property
    def clock_rate(self) -> int:
        """The RTP clock rate of the codec (90 kHz for video, 48 kHz for unknown audio)."""
        return VIDEO_CLOCK if self.kind == "video" else CLOCK_RATES.get(self.codec.lower(), 48000)


@dataclass(frozen=True, slots=True)
class VideoroomName:
    """What a Janus videoroom recording's file name says: whose stream, what, since when."""

    room: str
    user: str
    time_us: int
    kind: Literal["audio", "video", "data"]
    mindex: int | None  # the m-line index (Janus 1.x multistream); None for Janus 0.x names


_VIDEOROOM = re.compile(
    r"videoroom-(?P<room>.+?)-user-(?P<user>.+)-(?P<time>\d+)-(?P<kind>audio|video|data)"
    r"(?:-(?P<mindex>\d+))?\.mjr"
)


def parse_videoroom_name(name: str | os.PathLike[str]) -> VideoroomName | None:
    """Parse ``videoroom-<room>-user-<id>-<µs>-<audio|video|data>[-<mindex>].mjr``; None if not.

    Janus 1.x appends the m-line index; 0.x does not. A directory part is ignored. Names still
    being written (``.mjr.tmp``) are not recordings yet and give None.
    """
    match = _VIDEOROOM.fullmatch(os.path.basename(os.fspath(name)))
    if match is None:
        return None
    mindex = match["mindex"]
    return VideoroomName(
        match["room"],
        match["user"],
        int(match["time"]),
        KINDS[match["kind"][0]],
        None if mindex is None else int(mindex),
    )


def _info_from_json(name: str, text: bytes, version: bytes) -> MjrInfo:
    """The MjrInfo of a JSON info header; CaptureError when janus-pp-rec would refuse it."""
    try:
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaptureError(f"info header is not JSON ({exc})", file=name, offset=10) from exc
    if not isinstance(raw, dict):
        raise CaptureError("info header is not a JSON object", file=name, offset=10)
    kind = KINDS.get(str(raw.get("t")).lower())
    codec = raw.get("c")
    created, first = raw.get("s"), raw.get("u")
    if kind is None or not isinstance(codec, str):
        raise CaptureError(f"info header lacks type or codec: {raw}", file=name, offset=10)
    if type(created) is not int or type(first) is not int:
        raise CaptureError(f"info header lacks times s and u: {raw}", file=name, offset=10)
    fmtp = raw.get("f")
    extmap: dict[int, str] = {}
    if isinstance(raw.get("x"), dict):
        for key, uri in raw["x"].items():
            if isinstance(key, str) and key.isdigit() and isinstance(uri, str):
                extmap[int(key)] = uri
    timed = version == MJR2
    return MjrInfo(
        kind,
        codec,
        fmtp if isinstance(fmtp, str) else None,
        extmap,
        created,
        first,
        raw.get("e") is True,
        raw,
        "MJR00002" if timed else "MJR00001",
        "recorded" if timed else "rtp",
    )


@dataclass(frozen=True, slots=True)
class MjrRecording:
    """A .mjr file whose header was read: ``info``, and its RTP packets by iterating it.

    Each iteration reads the file anew, sequentially; stats (if given) accumulate what was read.
    """

    path: str
    info: MjrInfo
    data_offset: int
    stats: ReadStats = field(default_factory=ReadStats)

    def __iter__(self) -> Iterator[Datagram]:
        """The RTP packets in file order; damage is skipped to the next frame marker and
        reported in stats; packets whose arrival time is out of line are set aside."""
        if self.info.format == "MJR00002":
            return guard_times(self._frames_timed(), self.stats)
        return self._frames_untimed()

    def _problem(self, message: str, offset: int) -> None:
        """Record damage that ends reading."""
        self.stats.problems.append(CaptureError(message, file=self.path, offset=offset))

    def _frames(self, timed: bool) -> Iterator[tuple[int, int, bytes]]:
        """(offset, ms or 0, frame bytes) of every frame; damage is skipped to the next marker.

        A frame is only trusted once the header after it is where its length says (or the
        file ends): when it is not, the frame ends at the next marker if that lies inside it
        (its length was corrupt), else the bytes up to the marker are skipped.
        """
        prefix, header = (FRAME2, _FRAME2) if timed else (LEGACY, _FRAME1)
        unpack = header.unpack
        size = header.size
        stats = self.stats
        offset = self.data_offset
        floor = offset  # searches start after the last place they resumed
        with open(self.path, "rb", buffering=BUFFER_SIZE) as f:
            f.seek(offset)
            read = f.read
            head = read(size)
            while True:
                if len(head) < size:
                    if head:
                        self._problem(
                            f"truncated frame header ({len(head)} of {size} bytes)", offset
                        )
                    return
                if timed:
                    magic, ms, length = unpack(head)
                else:
                    (magic, length), ms = unpack(head), 0
                resume: int | None = None
                if magic != prefix:
                    resume = self._search(f, max(floor, offset + 1), prefix, header)
                    if resume is None:
                        self._problem(f"bad frame prefix {magic!r}", offset)
                        return
                    stats.skip_span(self.path, offset, resume, f"bad frame prefix {magic!r}")
                else:
                    data = read(length)
                    if len(data) < length:
                        resume = self._search(f, max(floor, offset + size), prefix, header)
                        if resume is None:
                            self._problem(
                                f"truncated frame ({len(data)} of {length} bytes)", offset
                            )
                            return
                        reason = f"frame length {length} runs past the end of the file"
                        stats.skip_span(self.path, offset, resume, reason)
                    else:
                        head = read(size)
                        end = offset + size + length
                        if len(head) == size and head[: len(prefix)] != prefix:
                            resume = self._search(f, max(floor, offset + size), prefix, header)
                            if resume is not None and resume < end:  # the length was corrupt
                                data = data[: resume - offset - size]
                                reason = f"frame length {length} runs past the next frame"
                                stats.skip_span(self.path, resume, end, reason)
                            elif resume is not None:
                                reason = f"bad frame prefix {head[: len(prefix)]!r}"
                                stats.skip_span(self.path, end, resume, reason)
                        stats.records += 1
                        if self.info.kind == "data":
                            stats.skip(SKIP_DATA)
                        elif len(data) < RTP_HEADER_LEN:
                            stats.skip(SKIP_SHORT)
                        else:
                            yield offset, ms, data
                        if resume is None:
                            offset = end
                            continue
                floor = resume + 1
                f.seek(resume)
                offset = resume
                head = read(size)

    def _search(self, f: BinaryIO, start: int, prefix: bytes, header: struct.Struct) -> int | None:
        """The offset of the first plausible frame at or after start: its marker, a length that
        fits an RTP packet (any, in a data recording) inside the file, and after it another
        marker or the end of the file."""
        rtp = self.info.kind != "data"
        size = header.size
        pos = start
        span = SEARCH_FIRST
        while True:
            want = span + 2 * size + 0xFFFF
            f.seek(pos)
            buf = f.read(want)
            eof = len(buf) < want
            count = len(buf) if eof else span
            q = buf.find(prefix, 0, count + len(prefix) - 1)
            while 0 <= q < count:
                if q + size <= len(buf):
                    length = struct.unpack_from("!H", buf, q + size - 2)[0]
                    end = q + size + length
                    if (
                        end <= len(buf)
                        and (not rtp or (length >= RTP_HEADER_LEN and buf[q + size] >> 6 == 2))
                        and (
                            (eof and len(buf) - end < size)
                            or buf[end : end + len(prefix)] == prefix
                        )
                    ):
                        return pos + q
                q = buf.find(prefix, q + 1, count + len(prefix) - 1)
            if eof:
                return None
            pos += span
            span = min(2 * span, SEARCH_CHUNK)

    def _frames_timed(self) -> Iterator[Datagram]:
        """MJR00002: arrival = header u + the frame's ms offset."""
        base_us = self.info.first_us or 0
        for offset, ms, data in self._frames(True):
            self.stats.datagrams += 1
            yield Datagram((base_us + ms * 1000) * 1000, data, None, None, self.path, offset)

    def _frames_untimed(self) -> Iterator[Datagram]:
        """MJR00001 and legacy: arrival derived from unwrapped RTP timestamps after the first.

        Each timestamp is unwrapped against the last packet kept, so a corrupt one (set aside as
        out of line, see records.ArrivalGuard) does not shift the packets after it; the first
        packet kept is the one at the anchor.
        """
        base_ns = (self.info.first_us or 0) * 1000
        rate = self.info.clock_rate
        stats = self.stats
        limit = OUT_OF_LINE_NS
        ref_ts: int | None = None
        ref_ticks = 0
        first: int | None = None  # ticks of the first packet kept
        guard = ArrivalGuard()
        pending: list[tuple[int, int, int, bytes, int]] = []  # time, ticks, ts, data, offset

        def datagram(ticks: int, data: bytes, offset: int) -> Datagram:
            nonlocal first
            if first is None:
                first = ticks
            return Datagram(
                base_ns + (ticks - first) * 1_000_000_000 // rate,
                data,
                None,
                None,
                self.path,
                offset,
            )

        for offset, _ms, data in self._frames(False):
            ts = int.from_bytes(data[4:8], "big")
            if ref_ts is None:
                ref_ts = ts
            delta = (ts - ref_ts) & 0xFFFFFFFF
            ticks = ref_ticks + (delta - (1 << 32) if delta >= 1 << 31 else delta)
            t = ticks * 1_000_000_000 // rate
            stats.datagrams += 1
            last = guard.last
            if not pending and last is not None and -limit <= t - last <= limit:
                guard.gap, guard.last = abs(t - last), t
                ref_ticks, ref_ts = ticks, ts
                yield datagram(ticks, data, offset)
                continue
            pending.append((t, ticks, ts, data, offset))
            aside, decided = guard.settle([p[0] for p in pending], False)
            set_aside(stats, len(aside))
            for i in range(decided):
                if i not in aside:
                    _, ref_ticks, ref_ts, data, offset = pending[i]
                    yield datagram(ref_ticks, data, offset)
            del pending[:decided]
        aside, _ = guard.settle([p[0] for p in pending], True)
        set_aside(stats, len(aside))
        for i, (_, ticks, _, data, offset) in enumerate(pending):
            if i not in aside:
                yield datagram(ticks, data, offset)


def read_mjr(path: str | os.PathLike[str], stats: ReadStats | None = None) -> MjrRecording:
    """Read a .mjr file's header; iterate the result for its packets.

    Raises CaptureError at once when the file is not a recording (unknown magic, truncated or
    invalid info header). Legacy files take their start time from a videoroom file name.
    """
    name = os.fspath(path)
    stats = ReadStats() if stats is None else stats
    try:
        with open(name, "rb") as f:
            head = f.read(10)
            magic = head[:8]
            if len(head) < 10 or magic not in MJR_MAGICS:
                raise CaptureError(
                    "not a Janus recording: it starts with no MJR magic", file=name, offset=0
                )
            length = int.from_bytes(head[8:10], "big")
            body = f.read(length)
    except OSError as exc:
        raise CaptureError(f"cannot open: {exc.strerror}", file=name, offset=0) from exc
    if len(body) < length:
        raise CaptureError(
            f"info header truncated ({len(body)} of {length} bytes)", file=name, offset=0
        )
    if magic == LEGACY:
        kind = KINDS.get(body[:1].decode("latin-1"))
        if length != 5 or kind is None:
            raise CaptureError(f"bad legacy header {body!r}", file=name, offset=0)
        named = parse_videoroom_name(name)
        first_us = None if named is None else named.time_us
        codec = {"audio": "opus", "video": "vp8", "data": "text"}[kind]  # as janus-pp-rec assumes
        info = MjrInfo(kind, codec, None, {}, None, first_us, False, {}, "legacy", "rtp")
    else:
        info = _info_from_json(name, body, magic)
    return MjrRecording(name, info, 10 + length, stats)
