"""Read a room's captures into participants and streams: what `skymix inspect` shows.

All capture files are read together in arrival order (the relay clock), a batch of datagrams at a
time (see skymix.ingest.batch). Each SSRC is matched once to a participant's stream by the session
description (or, with none, each SSRC becomes a participant whose codec is guessed from its
packets); RTX is unwrapped into the stream it repairs; every SSRC gets a frame assembler, a clock
fit against the relay clock and its RTCP sender reports. A batch's packets are routed to their
streams with array operations, so the per-packet cost in Python is a few array elements and the
per-frame cost one call. A Janus .mjr file is one stream by itself, grouped into participants by
the videoroom file name.

Nothing is lost silently and nothing the description cannot mix stops the scan. RTP of a codec
skymix cannot mix (CN, telephone-event, L16, RED, anything unknown) or of a payload type the
description does not declare is skipped and listed with its SSRC, payload type, reason and count
(RoomScan.skipped_streams); on an SSRC that also carries a mixable codec, such packets still take
their sequence numbers (as padding), so they are not mistaken for losses. SSRCs that no described
participant claims are listed with their addresses (RoomScan.unclaimed), and so are described
participants and streams that no packet matched (RoomScan.unmatched). RoomScan.damage_summary()
says all of it, and the read damage of the files, in a few lines; RoomScan.damaged() is whether
there was any.
"""

from __future__ import annotations

import gc
import heapq
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..errors import CaptureError, DescriptionError
from ..ingest import Datagram, ReadStats, capture_format, read_mjr
from ..ingest.batch import DatagramBatch, batches_of, read_batches
from ..ingest.mjr import SKIP_DATA, parse_videoroom_name
from ..ingest.pcap import SKIP_NOT_IP, SKIP_NOT_UDP
from ..ingest.records import SKIP_OUT_OF_LINE
from ..progress import ProgressCallback, ProgressEvent, Stage
from ..session import SessionSpec, StreamSpec
from ..session.detect import Guess, guess_stream
from ..sync import ClockEstimator, ClockFit, SenderClock
from .assembler import EncodedFrame, StreamAssembler, StreamStats, TimestampUnwrapper
from .codecs import codec_for
from .rtpbatch import RtpColumns, audio_levels, sender_reports, split_batch

__all__ = [
    "FrameCallback",
    "FrameGroup",
    "ParticipantReport",
    "RoomReader",
    "RoomScan",
    "RoomStep",
    "SkippedStream",
    "StreamReport",
    "UnclaimedStream",
    "UnmatchedParticipant",
    "scan_room",
]

FrameCallback = Callable[[str, str, EncodedFrame], None]
FrameGroup = tuple[str, str, list[EncodedFrame]]
"""(participant id, stream kind, frames of that stream in media order)."""
"""Called with (participant id, stream kind, frame) for every frame as it becomes final."""

NTP_EPOCH_OFFSET = 2208988800
GUESS_PACKETS = 120  # packets of an undescribed SSRC looked at before its codec is guessed
ABSENCE_NS = 5_000_000_000  # no media from a participant this long: they left
IDLE_NS = {"audio": 1_000_000_000, "video": 2_000_000_000}  # muted / camera off, if longer
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
SUMMARY_LINES = 10  # lines of one kind in the damage summary before "... and N more"
#: Reasons readers skip records for that are other traffic, not damage (ReadStats.skipped).
NOT_DAMAGE = frozenset({SKIP_NOT_IP, SKIP_NOT_UDP, SKIP_DATA})
#: Skip reasons of the room (RoomScan.skipped) that are damage; the rest is other traffic
#: (STUN, DTLS) or detailed in the typed lists.
DAMAGE = ("malformed RTP", "malformed RTX", "RTX before its stream", "malformed RTCP")
SKIPPED_RTP = "RTP that cannot be mixed"
UNCLAIMED_RTP = "RTP not in the description"


@dataclass(slots=True)
class StreamReport:
    """One stream of a participant (by id); several SSRCs when the sender renegotiated."""

    participant: str
    kind: str
    codec: str
    clock_rate: int
    ssrcs: list[int] = field(default_factory=list)
    stats: dict[int, StreamStats] = field(default_factory=dict)
    clocks: dict[int, ClockFit] = field(default_factory=dict)
    sender_clocks: dict[int, SenderClock] = field(default_factory=dict)
    first_arrival_ns: int | None = None
    last_arrival_ns: int | None = None
    idle: list[list[int]] = field(default_factory=list)
    audio_level_id: int | None = None  # the RFC 8285 id of the RFC 6464 audio level
    audio_levels: int = 0
    note: str | None = None

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.stats.values())


@dataclass(slots=True)
class ParticipantReport:
    id: str
    name: str
    streams: list[StreamReport] = field(default_factory=list)
    presence: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SkippedStream:
    """RTP of one SSRC and payload type that was read but is not mixed, and why.

    file: where its first packet is. participant: the participant (described, or guessed) whose
    stream it is; None when it is nobody's (no payload type of its SSRC could be mixed).
    """

    file: str
    ssrc: int
    payload_type: int
    reason: str
    packets: int
    participant: str | None = None

    def __str__(self) -> str:
        who = f"{self.participant}: " if self.participant is not None else ""
        return (
            f"{who}skipped ssrc {self.ssrc:#010x}, pt {self.payload_type}, {self.packets} "
            f"packets: {self.reason} ({self.file})"
        )


@dataclass(frozen=True, slots=True)
class UnclaimedStream:
    """RTP of one SSRC and payload type that no described participant claims (its first
    packet's addresses; None where the capture has none)."""

    file: str
    ssrc: int
    payload_type: int
    packets: int
    source: str | None
    destination: str | None

    def __str__(self) -> str:
        where = "".join(
            f" {word} {address}"
            for word, address in (("from", self.source), ("to", self.destination))
            if address is not None
        )
        return (
            f"unclaimed stream: ssrc {self.ssrc:#010x}, pt {self.payload_type}, "
            f"{self.packets} packets,{where} ({self.file})"
        )


@dataclass(frozen=True, slots=True)
class UnmatchedParticipant:
    """A described participant some (or all: whole) of whose streams no packet matched.

    streams: labels of the streams nothing matched; ports, ssrcs and payload_types: what they
    expected packets to have. Streams marked inactive or recvonly (nothing sent) are not
    expected to match.
    """

    participant: str
    name: str
    described_by: str
    streams: tuple[str, ...]
    ports: tuple[int, ...]
    ssrcs: tuple[int, ...]
    payload_types: tuple[int, ...]
    whole: bool

    def __str__(self) -> str:
        expected = " / ".join(
            part
            for part in (
                _listed("port", self.ports, str),
                _listed("ssrc", self.ssrcs, lambda x: f"{x:#010x}"),
                _listed("payload type", self.payload_types, str),
            )
            if part
        )
        source = f"described by {self.described_by}" if self.described_by else "described"
        if self.whole:
            return f"{self.participant}: {source}, no packet matched {expected}"
        return (
            f"{self.participant}: {', '.join(self.streams)} ({source}): no packet matched "
            f"{expected}"
        )


def _listed(word: str, values: Sequence[int], show: Callable[[int], str]) -> str:
    """ "port 5004", "ports 5004, 5006", "" for none."""
    if not values:
        return ""
    return f"{word}{'s' if len(values) > 1 else ''} {', '.join(map(show, values))}"


@dataclass(slots=True)
class RoomScan:
    """Everything one pass over a room's captures learned.

    skipped counts what was not used by reason; skipped_streams, unclaimed and unmatched say
    which streams and participants those were (module docstring).
    """

    participants: list[ParticipantReport]
    files: dict[str, ReadStats]
    skipped: Counter[str]
    problems: list[CaptureError]
    start_ns: int | None
    end_ns: int | None
    skipped_streams: list[SkippedStream] = field(default_factory=list)
    unclaimed: list[UnclaimedStream] = field(default_factory=list)
    unmatched: list[UnmatchedParticipant] = field(default_factory=list)

    def damage_summary(self) -> list[str]:
        """A few lines for a person: streams skipped, unclaimed and unmatched, then what was
        damaged in each file and in the RTP; empty when nothing was."""
        lines = [
            *_capped([str(s) for s in self.skipped_streams], "skipped streams"),
            *_capped([str(u) for u in self.unclaimed], "unclaimed streams"),
            *_capped([str(u) for u in self.unmatched], "unmatched participants"),
        ]
        for name, stats in self.files.items():
            lines.extend(_file_damage(name, stats))
        damage = [f"{self.skipped[reason]} {reason}" for reason in DAMAGE if self.skipped[reason]]
        if damage:
            lines.append("skipped " + ", ".join(damage))
        lines.extend(
            f"{p.id} {s.kind}: {s.total('malformed')} malformed frame(s) skipped"
            for p in self.participants
            for s in p.streams
            if s.total("malformed")
        )
        return lines

    def damaged(self) -> bool:
        """Whether anything was skipped, resynced, set aside or unmatched (strict mode's test):
        whether the damage summary says anything."""
        return bool(self.damage_summary())

    def to_json(self) -> dict[str, object]:
        """The scan as plain data (for `skymix inspect --json` and reports)."""

        def stream(s: StreamReport) -> dict[str, object]:
            resolutions = sorted({(w, h) for st in s.stats.values() for _, w, h in st.resolutions})
            return {
                "kind": s.kind,
                "codec": s.codec,
                "ssrcs": s.ssrcs,
                "first_arrival_ns": s.first_arrival_ns,
                "last_arrival_ns": s.last_arrival_ns,
                "packets": s.total("packets"),
                "lost": s.total("lost"),
                "loss_percent": round(
                    100.0
                    * s.total("lost")
                    / max(1, s.total("packets") - s.total("duplicates") + s.total("lost")),
                    3,
                ),
                "reordered": s.total("reordered"),
                "duplicates": s.total("duplicates"),
                "late": s.total("late"),
                "frames": s.total("frames"),
                "keyframes": s.total("keyframes"),
                "incomplete_frames": s.total("incomplete_frames"),
                "frames_skipped_for_keyframe": s.total("frames_skipped_for_keyframe"),
                "gaps": sum(len(st.gaps) for st in s.stats.values()),
                "resolutions": [list(r) for r in resolutions],
                "clock": {
                    f"{ssrc:#010x}": {
                        "drift_ppm": round(c.drift_ppm, 2),
                        "offset_ns": round(c.offset_ns),
                        "jitter_ms": round(c.jitter_ns / 1e6, 3),
                        "windows": c.points,
                    }
                    for ssrc, c in s.clocks.items()
                },
                "sender_reports": sum(c.reports for c in s.sender_clocks.values()),
                "idle": s.idle,
                "audio_levels": s.audio_levels,
                "note": s.note,
            }

        return {
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "participants": [
                {
                    "id": p.id,
                    "name": p.name,
                    "presence": p.presence,
                    "streams": [stream(s) for s in p.streams],
                }
                for p in self.participants
            ],
            "skipped": dict(self.skipped),
            "files": {
                f: {
                    "records": st.records,
                    "datagrams": st.datagrams,
                    "skipped": dict(st.skipped),
                    "damaged": [[d.start, d.end, d.reason] for d in st.spans],
                }
                for f, st in self.files.items()
            },
            "problems": [str(p) for p in self.problems],
            "skipped_streams": [
                {
                    "file": s.file,
                    "ssrc": s.ssrc,
                    "payload_type": s.payload_type,
                    "reason": s.reason,
                    "packets": s.packets,
                    "participant": s.participant,
                }
                for s in self.skipped_streams
            ],
            "unclaimed": [
                {
                    "file": u.file,
                    "ssrc": u.ssrc,
                    "payload_type": u.payload_type,
                    "packets": u.packets,
                    "source": u.source,
                    "destination": u.destination,
                }
                for u in self.unclaimed
            ],
            "unmatched": [
                {
                    "id": u.participant,
                    "name": u.name,
                    "described_by": u.described_by,
                    "streams": list(u.streams),
                    "ports": list(u.ports),
                    "ssrcs": list(u.ssrcs),
                    "payload_types": list(u.payload_types),
                    "whole": u.whole,
                }
                for u in self.unmatched
            ],
            "damage": self.damage_summary(),
        }


def _capped(lines: list[str], what: str) -> list[str]:
    """At most SUMMARY_LINES of them, then how many more there are."""
    if len(lines) <= SUMMARY_LINES:
        return lines
    return [*lines[:SUMMARY_LINES], f"... and {len(lines) - SUMMARY_LINES} more {what}"]


def _file_damage(name: str, stats: ReadStats) -> list[str]:
    """The damage one reader met: spans skipped to resynchronise, datagrams set aside (their
    arrival time out of line) or skipped as damaged, and what ended reading early."""
    lines = []
    spans = stats.spans
    if spans:
        first = spans[0]
        lines.append(
            f"{name}: skipped {len(spans)} damaged span(s), "
            f"{sum(span.end - span.start for span in spans)} bytes in all, the first at bytes "
            f"{first.start}-{first.end}: {first.reason}"
        )
    aside = stats.skipped[SKIP_OUT_OF_LINE]
    if aside:
        lines.append(f"{name}: set aside {aside} datagram(s) whose arrival time was out of line")
    damage = [
        f"{n} {reason}"
        for reason, n in stats.skipped.items()
        if n and reason not in NOT_DAMAGE and reason != SKIP_OUT_OF_LINE
    ]
    if damage:
        lines.append(f"{name}: skipped " + ", ".join(damage))
    spans_at = {span.start for span in spans}
    lines.extend(str(p) for p in stats.problems if p.offset not in spans_at)
    return lines


Ints = npt.NDArray[np.int64]


@dataclass(slots=True)
class _Ssrc:
    """One bound SSRC. payload_types: those of its codec (None: any, a Janus recording);
    the SSRC's other payload types are skipped, for the reason in reasons if there is one."""

    report: StreamReport
    assembler: StreamAssembler
    clock: ClockEstimator
    unwrap: TimestampUnwrapper
    payload_types: frozenset[int] | None
    stream: StreamSpec | None = None  # what the description says of it
    reasons: dict[int, str] = field(default_factory=dict)
    reports: list[tuple[float, int]] = field(default_factory=list)
    spans: list[list[int]] = field(default_factory=list)  # media seen, gaps over ABSENCE_NS

    def takes(self, payload_type: int) -> bool:
        return self.payload_types is None or payload_type in self.payload_types

    def why_not(self, payload_type: int) -> str:
        """Why a payload type of this SSRC is not mixed."""
        if payload_type in self.reasons:
            return self.reasons[payload_type]
        stream = self.stream
        if stream is None or not stream.declares(payload_type):
            where = f" for {stream.label()}" if stream is not None else ""
            return f"payload type {payload_type} is not described{where}"
        if payload_type in stream.rtx:
            return "RTX on the media SSRC"
        name = stream.codecs[payload_type].name
        if not _mixable(name):
            return f"codec {name} cannot be mixed"
        return f"codec {name} after {self.report.codec} on one SSRC"


@dataclass(slots=True)
class _Tally:
    """Packets of one SSRC and payload type set aside, while the scan runs."""

    file: str
    reason: str
    participant: str | None
    source: str | None = None
    destination: str | None = None
    packets: int = 0


def _mark(
    marks: npt.NDArray[np.bool_], size: int, rows: npt.NDArray[np.intp]
) -> npt.NDArray[np.bool_]:
    """marks (all False at first, allocated on first use) with rows set."""
    if not len(marks):
        marks = np.zeros(size, np.bool_)
    marks[rows] = True
    return marks


def _mixable(codec: str) -> bool:
    try:
        codec_for(codec)
    except CaptureError:
        return False
    return True


class _Room:
    def __init__(self, description: SessionSpec, collect: bool, fit_clocks: bool = True) -> None:
        self.description = description
        self.collect = collect
        self.fit_clocks = fit_clocks
        self.out: list[FrameGroup] = []  # the frames finished since the last batch
        self.participants: dict[str, ParticipantReport] = {}
        self.streams: dict[tuple[str, str], StreamReport] = {}
        self.ssrcs: dict[int, _Ssrc] = {}
        self.pending: dict[int, list[Datagram]] = {}
        self.skipped: Counter[str] = Counter()
        self.problems: list[CaptureError] = []
        self.early_reports: dict[int, list[tuple[float, int]]] = {}
        self.mjr_streams: dict[str, StreamReport] = {}  # by file
        self.mjr_refused: dict[str, tuple[str, str]] = {}  # file -> (why not mixed, whose)
        self.skipped_streams: dict[tuple[int, int], _Tally] = {}  # by (ssrc, payload type)
        self.unclaimed: dict[tuple[int, int], _Tally] = {}
        self.matched: set[int] = set()  # id() of the described streams a packet matched

    def skip_stream(
        self, file: str, ssrc: int, payload_type: int, reason: str, packets: int, pid: str | None
    ) -> None:
        """Count packets of a stream that cannot be mixed (the latest reason is kept)."""
        tally = self.skipped_streams.setdefault((ssrc, payload_type), _Tally(file, reason, pid))
        tally.reason = reason
        tally.packets += packets
        self.skipped[SKIPPED_RTP] += packets

    def participant(self, pid: str, name: str) -> ParticipantReport:
        if pid not in self.participants:
            self.participants[pid] = ParticipantReport(pid, name)
        return self.participants[pid]

    def stream(
        self, pid: str, name: str, label: str, kind: str, codec: str, clock_rate: int
    ) -> StreamReport:
        key = (pid, label)
        if key not in self.streams:
            report = StreamReport(pid, kind, codec, clock_rate)
            self.streams[key] = report
            self.participant(pid, name).streams.append(report)
        return self.streams[key]

    def bind(
        self,
        ssrc: int,
        report: StreamReport,
        file: str,
        payload_types: frozenset[int] | None,
        stream: StreamSpec | None = None,
    ) -> _Ssrc:
        state = _Ssrc(
            report,
            StreamAssembler(codec_for(report.codec), ssrc, file=file),
            ClockEstimator(report.clock_rate),
            TimestampUnwrapper(),
            payload_types,
            stream,
        )
        report.ssrcs.append(ssrc)
        report.stats[ssrc] = state.assembler.stats
        self.ssrcs[ssrc] = state
        state.reports.extend(
            (ntp, state.unwrap(rtp)) for ntp, rtp in self.early_reports.pop(ssrc, ())
        )
        return state

    def process(self, batch: DatagramBatch) -> None:
        """Sort a batch into RTCP, skipped traffic and RTP, and feed the RTP to its streams."""
        mjr = self.mjr_streams.get(batch.file)
        refused = self.mjr_refused.get(batch.file)
        split = split_batch(batch, rtp_only=mjr is not None or refused is not None)
        for _, kind in split.other:
            self.skipped[f"not RTP ({kind})"] += 1
        for row, message in split.malformed:
            self.skipped["malformed RTP"] += 1
            self.problems.append(
                CaptureError(
                    f"malformed RTP: {message}", file=batch.file, offset=int(batch.offset[row])
                )
            )
        if self.fit_clocks:  # sender reports feed the clocks only
            for row in split.rtcp:
                _rtcp(self, batch.data(row))
        rtp = split.rtp
        if not len(rtp):
            return
        target = np.full(len(rtp), -1, np.int64)
        seq = rtp.seq.copy()
        start = rtp.payload_start.copy()
        key = rtp.ssrc << 7 | rtp.payload_type
        groups, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        rtx_groups: list[tuple[npt.NDArray[np.intp], int, int]] = []
        skipped: list[tuple[npt.NDArray[np.intp], int]] = []  # rows of a described stream
        padded: Counter[int] = Counter()  # rows fed as padding, by SSRC
        aside = np.zeros(0, np.bool_)  # those rows (sized when there are some)
        waiting: dict[int, list[npt.NDArray[np.intp]]] = {}  # rows of undescribed SSRCs
        for g in np.argsort(first).tolist():  # in order of first arrival: SSRCs bind in order
            k, i = int(groups[g]), int(first[g])
            ssrc, pt = k >> 7, k & 0x7F
            rows = np.flatnonzero(inverse == g)
            state = self.ssrcs.get(ssrc)
            if state is None and refused is not None:
                self.skip_stream(batch.file, ssrc, pt, refused[0], len(rows), refused[1])
                continue
            if state is None and mjr is not None:
                state = self.bind(ssrc, mjr, batch.file, None)
            if state is None and self.description.participants:
                state = self.match(batch, rtp, i, rows, rtx_groups, skipped)
            if state is None and not self.description.participants:
                waiting.setdefault(ssrc, []).append(rows)
            if state is None:
                continue
            target[rows] = ssrc
            if not state.takes(pt):
                start[rows] = rtp.payload_end[rows]  # keeps its sequence numbers, as padding
                padded[ssrc] += len(rows)
                aside = _mark(aside, len(rtp), rows)
                self.skip_stream(
                    batch.file, ssrc, pt, state.why_not(pt), len(rows), state.report.participant
                )
        for ssrc, parts in waiting.items():  # all payload types of an SSRC wait together
            self.wait(batch, rtp, np.sort(np.concatenate(parts)), ssrc)
        for rows, ssrc in skipped:  # skipped before a later payload type bound their SSRC
            if ssrc in self.ssrcs:
                target[rows] = ssrc
                start[rows] = rtp.payload_end[rows]
                padded[ssrc] += len(rows)
                aside = _mark(aside, len(rtp), rows)
        for rows, repaired, _ in rtx_groups:
            self.repair(batch, rtp, rows, repaired, target, seq, start)
        routed = np.flatnonzero(target >= 0)
        order = routed[np.argsort(target[routed], kind="stable")]
        cuts = np.flatnonzero(np.diff(target[order])) + 1
        for index in np.split(order, cuts):
            if len(index):
                state = self.ssrcs[int(target[index[0]])]
                ssrc = state.assembler.ssrc
                marks = aside[index] if padded[ssrc] else None
                self.feed(state, batch, rtp, index, seq[index], start[index], marks)
                state.assembler.stats.packets -= padded[ssrc]  # not media

    def match(
        self,
        batch: DatagramBatch,
        rtp: RtpColumns,
        i: int,
        rows: npt.NDArray[np.intp],
        rtx_groups: list[tuple[npt.NDArray[np.intp], int, int]],
        skipped: list[tuple[npt.NDArray[np.intp], int]],
    ) -> _Ssrc | None:
        """Bind an SSRC new to the room by the description (its first packet's PT and ports);
        RTX groups are set aside to be unwrapped once the streams they repair are bound. What
        nobody describes is counted as unclaimed; a described stream's payload type that cannot
        be mixed is skipped (and its rows noted in skipped)."""
        ssrc, pt = int(rtp.ssrc[i]), int(rtp.payload_type[i])
        src, dst = batch.pairs[batch.pair[rtp.rows[i]]]
        match = self.description.match_rtp(ssrc, pt, src, dst)
        if match is None:
            self.skipped[UNCLAIMED_RTP] += len(rows)
            tally = self.unclaimed.setdefault(
                (ssrc, pt),
                _Tally(
                    batch.file,
                    "",
                    None,
                    None if src is None else str(src),
                    None if dst is None else str(dst),
                ),
            )
            tally.packets += len(rows)
            return None
        stream = match.stream
        p = match.participant
        self.matched.add(id(stream))
        if match.codec is None or not _mixable(match.codec.name):
            reason = (
                f"payload type {pt} is not described for {stream.label()}"
                if match.codec is None
                else f"codec {match.codec.name} cannot be mixed"
            )
            self.skip_stream(batch.file, ssrc, pt, reason, len(rows), p.id)
            skipped.append((rows, ssrc))
            return None
        if match.rtx:
            # the SSRC it repairs: declared (ssrc-group FID), else the stream's current one
            media = self.streams.get((p.id, stream.label()))
            repaired = stream.rtx_ssrcs.get(ssrc) or (media.ssrcs[-1] if media else None)
            rtx_groups.append(
                (rows, -1 if repaired is None else repaired, match.codec.payload_type)
            )
            return None
        report = self.stream(
            p.id, p.name, stream.label(), stream.kind, match.codec.name, match.codec.clock_rate
        )
        if report.audio_level_id is None:
            report.audio_level_id = next(
                (i for i, uri in stream.extmap.items() if uri == AUDIO_LEVEL_URI), None
            )
        name = match.codec.name
        same = frozenset(t for t, c in stream.codecs.items() if c.name == name)
        return self.bind(ssrc, report, batch.file, same, stream)

    def repair(
        self,
        batch: DatagramBatch,
        rtp: RtpColumns,
        rows: npt.NDArray[np.intp],
        repaired: int,
        target: Ints,
        seq: Ints,
        start: Ints,
    ) -> None:
        """RFC 4588: an RTX payload is the original sequence number, then the original payload."""
        if repaired not in self.ssrcs:
            self.skipped["RTX before its stream"] += len(rows)
            return
        short = rtp.payload_end[rows] - rtp.payload_start[rows] < 2
        if short.any():
            self.skipped["malformed RTX"] += int(short.sum())
            rows = rows[~short]
        b = np.frombuffer(batch.buf, np.uint8)
        at = rtp.payload_start[rows]
        seq[rows] = (b[at].astype(np.int64) << 8) | b[at + 1]
        start[rows] = at + 2
        target[rows] = repaired

    def wait(
        self, batch: DatagramBatch, rtp: RtpColumns, rows: npt.NDArray[np.intp], ssrc: int
    ) -> None:
        """Without a description, an SSRC's first packets wait until its codec can be guessed."""
        waiting = self.pending.setdefault(ssrc, [])
        waiting.extend(batch.datagram(int(rtp.rows[i])) for i in rows.tolist())
        if len(waiting) >= GUESS_PACKETS:
            _guess(self, ssrc, self.pending.pop(ssrc))

    def feed(
        self,
        state: _Ssrc,
        batch: DatagramBatch,
        rtp: RtpColumns,
        index: npt.NDArray[np.intp],
        seq: Ints,
        start: Ints,
        aside: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        """One stream's packets of a batch, in arrival order; aside marks those of payload types
        that are not mixed, which keep their sequence numbers but say nothing of the clock."""
        report = state.report
        arrival = batch.arrival_ns[rtp.rows[index]]
        previous = report.last_arrival_ns
        if report.first_arrival_ns is None:
            report.first_arrival_ns = int(arrival[0])
        reach = np.maximum.accumulate(
            arrival if previous is None else np.concatenate([[previous], arrival])
        )
        before = reach[:-1] if previous is not None else np.concatenate([[arrival[0]], reach[:-1]])
        gap = arrival - before
        for k in np.flatnonzero(gap > IDLE_NS.get(report.kind, IDLE_NS["video"])).tolist():
            report.idle.append([int(before[k]), int(arrival[k])])
        report.last_arrival_ns = int(reach[-1])
        spans = state.spans
        if not spans:
            spans.append([int(arrival[0]), int(arrival[0])])
        for k in np.flatnonzero(gap > ABSENCE_NS).tolist():
            spans[-1][1] = int(before[k])
            spans.append([int(arrival[k]), int(arrival[k])])
        spans[-1][1] = max(spans[-1][1], int(reach[-1]))
        levels = None
        if report.audio_level_id is not None:
            levels = audio_levels(rtp.select(index), report.audio_level_id)
            report.audio_levels += int((levels >= 0).sum())
        timestamp = rtp.timestamp[index]
        if self.fit_clocks:
            if aside is None:
                state.clock.add_batch(state.unwrap.batch(timestamp), arrival)
            else:
                state.clock.add_batch(state.unwrap.batch(timestamp[~aside]), arrival[~aside])
        self.deliver(
            state,
            state.assembler.push_batch(
                arrival,
                seq,
                timestamp,
                rtp.marker[index],
                batch.buf,
                start,
                rtp.payload_end[index],
                levels,
            ),
        )

    def deliver(self, state: _Ssrc, frames: list[EncodedFrame]) -> None:
        if self.collect and frames:
            self.out.append((state.report.participant, state.report.kind, frames))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a batch is processed: it allocates tens of
    thousands of frame tuples that cannot form cycles, and collections in the middle of it only
    walk them again and again (7 % of ingest). Reference counting frees as usual."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _unmatched(description: SessionSpec, matched: set[int]) -> list[UnmatchedParticipant]:
    """The described participants with streams that no packet matched (matched: their id())."""
    out = []
    for p in description.participants:
        expected = [s for s in p.streams if s.direction not in ("inactive", "recvonly")]
        missing = [s for s in expected if id(s) not in matched]
        if not missing:
            continue
        out.append(
            UnmatchedParticipant(
                p.id,
                p.name,
                p.described_by,
                tuple(s.label() for s in missing),
                tuple(sorted({s.port for s in missing if s.port is not None})),
                tuple(sorted({x for s in missing for x in s.ssrcs})),
                tuple(sorted({pt for s in missing for pt in s.codecs})),
                len(missing) == len(expected),
            )
        )
    return out


def _presence(spans: list[list[int]]) -> list[list[int]]:
    """The union of a participant's streams' spans, joining those less than ABSENCE_NS apart."""
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a - merged[-1][1] <= ABSENCE_NS:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


def _mjr_batches(path: Path, room: _Room, stats: ReadStats) -> Iterator[DatagramBatch]:
    recording = read_mjr(path, stats)
    info = recording.info
    parsed = parse_videoroom_name(path.name)
    pid = parsed.user if parsed else path.stem
    name = f"user {parsed.user}" if parsed else path.stem
    described = next((p for p in room.description.participants if p.id == pid), None)
    if described is not None:  # a manifest entry for this user: its name, and its streams
        name = described.name  # (this file's) are not "unmatched"
        room.matched.update(id(s) for s in described.streams if s.kind == info.kind)
    if not _mixable(info.codec):
        room.mjr_refused[str(path)] = (f"codec {info.codec} cannot be mixed", pid)
        return read_batches(path, stats, datagrams=recording)
    room.participant(pid, name)
    report = room.stream(
        pid, name, f"{info.kind}-{path.name}", info.kind, info.codec, info.clock_rate
    )
    report.note = f"Janus recording ({info.format}, times {info.timing})"
    room.mjr_streams[str(path)] = report
    return read_batches(path, stats, datagrams=recording)


@dataclass(frozen=True, slots=True)
class RoomStep:
    """What one batch of the captures completed: frames in groups of (participant id, kind,
    frames), each stream's in media order, and the relay time up to which the captures have been
    read (None at the end: everything was read)."""

    frames: list[FrameGroup]
    read_to_ns: int | None


class RoomReader:
    """Reads a room's captures once, a batch at a time: iterate for the frames as they become
    final (the mix decodes them while reading); ``scan`` holds the RoomScan afterwards."""

    def __init__(
        self,
        captures: Sequence[str | Path],
        description: SessionSpec | None = None,
        *,
        progress: ProgressCallback | None = None,
        collect: bool = True,
        fit_clocks: bool = True,
    ) -> None:
        self.captures = [Path(c) for c in captures]
        self.collect = collect  # False: only the scan is wanted, frames are not handed out
        self.fit_clocks = fit_clocks  # False: a second pass that has the clocks already
        self.description = description or SessionSpec(())
        self.progress = progress
        self.scan: RoomScan | None = None

    def __iter__(self) -> Generator[RoomStep, None, None]:
        room = _Room(self.description, self.collect, self.fit_clocks)
        files: dict[str, ReadStats] = {}
        sources: list[Iterator[DatagramBatch]] = []
        for path in self.captures:
            stats = files.setdefault(str(path), ReadStats())
            if capture_format(path) == "mjr":
                sources.append(_mjr_batches(path, room, stats))
            else:
                sources.append(read_batches(path, stats))
        start: int | None = None
        end: int | None = None
        count = 0
        for batch in heapq.merge(
            *((b for b in source if len(b)) for source in sources),
            key=lambda b: int(b.arrival_ns[0]),
        ):
            low, high = int(batch.arrival_ns.min()), int(batch.arrival_ns.max())
            start = low if start is None else min(start, low)
            end = high if end is None else max(end, high)
            with _collector_paused():
                room.process(batch)
            count += len(batch)
            if self.progress is not None:
                self.progress(ProgressEvent(Stage.READING, count, 0, "packets"))
            yield RoomStep(room.out, low)
            room.out = []
        for ssrc, waiting in list(room.pending.items()):
            _guess(room, ssrc, waiting)
        spans: dict[str, list[list[int]]] = {}
        for ssrc, state in room.ssrcs.items():
            room.deliver(state, state.assembler.flush())
            if state.clock.points >= 1:  # one window: offset only, at the nominal rate
                state.report.clocks[ssrc] = state.clock.fit()
            if state.reports:
                state.report.sender_clocks[ssrc] = SenderClock.from_reports(state.reports)
            room.problems.extend(state.assembler.stats.problems)
            spans.setdefault(state.report.participant, []).extend(state.spans)
        declared = {p.id: p for p in self.description.participants if p.joins or p.leaves}
        for participant in room.participants.values():
            spec = declared.get(participant.id)
            if spec is not None and start is not None and end is not None:
                # the description's join and leave times, where it gives them, over the media's
                participant.presence = [
                    [start if a is None else a, end if b is None else b] for a, b in spec.presence()
                ]
            else:
                participant.presence = _presence(spans.get(participant.id, []))
        for stats in files.values():
            room.problems.extend(stats.problems)
        if self.progress is not None:
            self.progress(ProgressEvent(Stage.READING, count, count, "packets"))
        self.scan = RoomScan(
            list(room.participants.values()),
            files,
            room.skipped,
            room.problems,
            start,
            end,
            [
                SkippedStream(t.file, ssrc, pt, t.reason, t.packets, t.participant)
                for (ssrc, pt), t in room.skipped_streams.items()
            ],
            [
                UnclaimedStream(t.file, ssrc, pt, t.packets, t.source, t.destination)
                for (ssrc, pt), t in room.unclaimed.items()
            ],
            _unmatched(self.description, room.matched),
        )
        yield RoomStep(room.out, None)


def scan_room(
    captures: Sequence[str | Path],
    description: SessionSpec | None = None,
    *,
    progress: ProgressCallback | None = None,
    on_frame: FrameCallback | None = None,
) -> RoomScan:
    """Read every capture once and report participants, streams, sync and damage.

    on_frame receives every assembled frame as soon as it is final: each stream's frames in
    media order; frames of different streams come a batch (a few seconds) at a time.
    """
    reader = RoomReader(captures, description, progress=progress, collect=on_frame is not None)
    for step in reader:
        if on_frame is not None:
            for pid, kind, frames in step.frames:
                for frame in frames:
                    on_frame(pid, kind, frame)
    assert reader.scan is not None
    return reader.scan


def _guess(room: _Room, ssrc: int, waiting: list[Datagram]) -> None:
    """Guess each payload type of an undescribed SSRC on its own; the SSRC becomes a stream of
    the most frequent one that can be mixed, and its other payload types are skipped. With none
    that can be mixed, all of its packets so far are skipped (the next ones are guessed again)."""
    from aiortc.rtp import RtpPacket  # here, not at start-up: importing aiortc takes 0.1 s

    by_pt: dict[int, list[tuple[int, bytes, bool, int]]] = {}
    for d in waiting:
        p = RtpPacket.parse(d.data)
        by_pt.setdefault(p.payload_type, []).append(
            (p.payload_type, p.payload, bool(p.marker), p.timestamp)
        )
    found: dict[int, Guess] = {}
    reasons: dict[int, str] = {}
    for pt, samples in by_pt.items():
        try:
            guess = guess_stream(samples)
        except DescriptionError as exc:
            reasons[pt] = str(exc)
            continue
        codec = guess.stream.codecs[pt]
        if _mixable(codec.name):
            found[pt] = guess
        else:
            reasons[pt] = f"codec {codec.name} cannot be mixed ({guess.note})"
    file = waiting[0].file
    if not found:
        for pt, samples in by_pt.items():
            room.skip_stream(file, ssrc, pt, reasons[pt], len(samples), None)
        return
    main = max(found, key=lambda pt: len(by_pt[pt]))
    guess = found[main]
    codec = guess.stream.codecs[main]
    same = frozenset(pt for pt, g in found.items() if g.stream.codecs[pt].name == codec.name)
    for pt, g in found.items():
        if pt not in same:
            reasons[pt] = f"codec {g.stream.codecs[pt].name} after {codec.name} on one SSRC"
    name = f"ssrc {ssrc:#010x}"
    report = room.stream(
        name, name, guess.stream.kind, guess.stream.kind, codec.name, codec.clock_rate
    )
    report.note = f"{name}: {guess.note}"
    room.bind(ssrc, report, file, same).reasons.update(reasons)
    for batch in batches_of(waiting, file):
        room.process(batch)


def _rtcp(room: _Room, data: bytes) -> None:
    try:
        reports = sender_reports(data)
    except ValueError:
        room.skipped["malformed RTCP"] += 1
        return
    for ssrc, ntp_timestamp, rtp_timestamp in reports:
        ntp = (ntp_timestamp >> 32) - NTP_EPOCH_OFFSET + (ntp_timestamp & 0xFFFFFFFF) / 2**32
        state = room.ssrcs.get(ssrc)
        if state is not None:
            state.reports.append((ntp, state.unwrap(rtp_timestamp)))
        elif len(room.early_reports.setdefault(ssrc, [])) < 8:
            # a report may come before the stream's first packet (FFmpeg sends one first)
            room.early_reports[ssrc].append((ntp, rtp_timestamp))
