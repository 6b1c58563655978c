"""Read a room's captures into participants and streams: what `skymix inspect` shows.

All capture files are read together in arrival order (the relay clock). Each RTP packet is
matched to a participant's stream by the session description (or, with none, each SSRC becomes a
participant whose codec is guessed from its packets); RTX is unwrapped into the stream it
repairs; every SSRC gets a frame assembler, a clock fit against the relay clock and its RTCP
sender reports. A Janus .mjr file is one stream by itself, grouped into participants by the
videoroom file name.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpPacket, RtcpSrPacket, RtpPacket, unwrap_rtx

from ..errors import CaptureError, DescriptionError
from ..ingest import Datagram, ReadStats, capture_format, read_capture, read_mjr
from ..ingest.mjr import parse_videoroom_name
from ..progress import ProgressCallback, ProgressEvent
from ..session import SessionSpec
from ..session.detect import classify_datagram, guess_stream
from ..sync import ClockEstimator, ClockFit, SenderClock
from .assembler import EncodedFrame, StreamAssembler, StreamStats, TimestampUnwrapper
from .codecs import codec_for

__all__ = ["FrameCallback", "ParticipantReport", "RoomScan", "StreamReport", "scan_room"]

FrameCallback = Callable[[str, str, EncodedFrame], None]
"""Called with (participant id, stream kind, frame) for every frame as it becomes final."""

NTP_EPOCH_OFFSET = 2208988800
GUESS_PACKETS = 120  # packets of an undescribed SSRC looked at before its codec is guessed
ABSENCE_NS = 5_000_000_000  # no media from a participant this long: they left
IDLE_NS = {"audio": 1_000_000_000, "video": 2_000_000_000}  # muted / camera off, if longer
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


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
    extensions: HeaderExtensionsMap | None = None
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


@dataclass(slots=True)
class RoomScan:
    """Everything one pass over a room's captures learned."""

    participants: list[ParticipantReport]
    files: dict[str, ReadStats]
    skipped: Counter[str]
    problems: list[CaptureError]
    start_ns: int | None
    end_ns: int | None

    def to_json(self) -> dict[str, object]:
        """The scan as plain data (for `skymix inspect --json` and reports)."""

        def stream(s: StreamReport) -> dict[str, object]:
            resolutions = sorted({(w, h) for st in s.stats.values()
                                  for _, w, h in st.resolutions})
            return {
                "kind": s.kind, "codec": s.codec, "ssrcs": s.ssrcs,
                "first_arrival_ns": s.first_arrival_ns, "last_arrival_ns": s.last_arrival_ns,
                "packets": s.total("packets"), "lost": s.total("lost"),
                "loss_percent": round(100.0 * s.total("lost")
                                      / max(1, s.total("packets") - s.total("duplicates")
                                            + s.total("lost")), 3),
                "reordered": s.total("reordered"), "duplicates": s.total("duplicates"),
                "late": s.total("late"), "frames": s.total("frames"),
                "keyframes": s.total("keyframes"),
                "incomplete_frames": s.total("incomplete_frames"),
                "frames_skipped_for_keyframe": s.total("frames_skipped_for_keyframe"),
                "gaps": sum(len(st.gaps) for st in s.stats.values()),
                "resolutions": [list(r) for r in resolutions],
                "clock": {f"{ssrc:#010x}": {"drift_ppm": round(c.drift_ppm, 2),
                                             "offset_ns": round(c.offset_ns),
                                             "jitter_ms": round(c.jitter_ns / 1e6, 3)}
                          for ssrc, c in s.clocks.items()},
                "sender_reports": sum(c.reports for c in s.sender_clocks.values()),
                "idle": s.idle,
                "audio_levels": s.audio_levels,
                "note": s.note,
            }

        return {
            "start_ns": self.start_ns, "end_ns": self.end_ns,
            "participants": [{"id": p.id, "name": p.name, "presence": p.presence,
                              "streams": [stream(s) for s in p.streams]}
                             for p in self.participants],
            "skipped": dict(self.skipped),
            "files": {f: {"records": st.records, "datagrams": st.datagrams,
                          "skipped": dict(st.skipped)} for f, st in self.files.items()},
            "problems": [str(p) for p in self.problems],
        }


@dataclass(slots=True)
class _Ssrc:
    report: StreamReport
    assembler: StreamAssembler
    clock: ClockEstimator
    unwrap: TimestampUnwrapper
    reports: list[tuple[float, int]] = field(default_factory=list)


class _Room:
    def __init__(self, description: SessionSpec, on_frame: FrameCallback | None) -> None:
        self.description = description
        self.on_frame = on_frame
        self.participants: dict[str, ParticipantReport] = {}
        self.streams: dict[tuple[str, str], StreamReport] = {}
        self.ssrcs: dict[int, _Ssrc] = {}
        self.pending: dict[int, list[tuple[Datagram, RtpPacket]]] = {}
        self.skipped: Counter[str] = Counter()
        self.problems: list[CaptureError] = []
        self.early_reports: dict[int, list[tuple[float, int]]] = {}

    def participant(self, pid: str, name: str) -> ParticipantReport:
        if pid not in self.participants:
            self.participants[pid] = ParticipantReport(pid, name)
        return self.participants[pid]

    def stream(self, pid: str, name: str, label: str, kind: str, codec: str,
               clock_rate: int) -> StreamReport:
        key = (pid, label)
        if key not in self.streams:
            report = StreamReport(pid, kind, codec, clock_rate)
            self.streams[key] = report
            self.participant(pid, name).streams.append(report)
        return self.streams[key]

    def bind(self, ssrc: int, report: StreamReport, file: str) -> _Ssrc:
        state = _Ssrc(report, StreamAssembler(codec_for(report.codec), ssrc, file=file),
                      ClockEstimator(report.clock_rate), TimestampUnwrapper())
        report.ssrcs.append(ssrc)
        report.stats[ssrc] = state.assembler.stats
        self.ssrcs[ssrc] = state
        state.reports.extend((ntp, state.unwrap(rtp)) for ntp, rtp in self.early_reports.pop(ssrc, ()))
        return state

    def feed(self, state: _Ssrc, d: Datagram, packet: RtpPacket) -> None:
        report = state.report
        if report.first_arrival_ns is None:
            report.first_arrival_ns = d.arrival_ns
        elif report.last_arrival_ns is not None and \
                d.arrival_ns - report.last_arrival_ns > IDLE_NS.get(report.kind, IDLE_NS["video"]):
            report.idle.append([report.last_arrival_ns, d.arrival_ns])
        report.last_arrival_ns = max(d.arrival_ns, report.last_arrival_ns or 0)
        self.seen(report.participant, d.arrival_ns)
        level = None
        if report.extensions is not None:
            try:
                level_ext = RtpPacket.parse(d.data, report.extensions).extensions.audio_level
            except ValueError:
                level_ext = None
            if level_ext is not None:
                level = level_ext[1]
                report.audio_levels += 1
        state.clock.add(state.unwrap(packet.timestamp), d.arrival_ns)
        frames = state.assembler.push(d.arrival_ns, packet.sequence_number, packet.timestamp,
                                      bool(packet.marker), packet.payload, level)
        self.deliver(state, frames)

    def deliver(self, state: _Ssrc, frames: list[EncodedFrame]) -> None:
        if self.on_frame is not None:
            for frame in frames:
                self.on_frame(state.report.participant, state.report.kind, frame)

    def seen(self, pid: str, arrival_ns: int) -> None:
        presence = self.participants[pid].presence
        if presence and arrival_ns - presence[-1][1] <= ABSENCE_NS:
            presence[-1][1] = arrival_ns
        else:
            presence.append([arrival_ns, arrival_ns])


def _mjr_stream(path: Path, room: _Room, stats: ReadStats) -> Iterator[tuple[Datagram, str]]:
    recording = read_mjr(path, stats)
    info = recording.info
    parsed = parse_videoroom_name(path.name)
    pid = parsed.user if parsed else path.stem
    name = f"user {parsed.user}" if parsed else path.stem
    room.participant(pid, name)
    report = room.stream(pid, name, f"{info.kind}-{path.name}", info.kind, info.codec,
                         info.clock_rate)
    report.note = f"Janus recording ({info.format}, times {info.timing})"
    for d in recording:
        yield d, f"{pid}\0{info.kind}-{path.name}"


def scan_room(captures: Sequence[str | Path], description: SessionSpec | None = None, *,
              progress: ProgressCallback | None = None,
              on_frame: FrameCallback | None = None) -> RoomScan:
    """Read every capture once and report participants, streams, sync and damage.

    on_frame receives every assembled frame (per stream in media order) as soon as it is final.
    """
    description = description or SessionSpec(())
    room = _Room(description, on_frame)
    files: dict[str, ReadStats] = {}
    sources: list[Iterable[tuple[Datagram, str | None]]] = []
    for capture in captures:
        path = Path(capture)
        stats = files.setdefault(str(path), ReadStats())
        if capture_format(path) == "mjr":
            sources.append(_mjr_stream(path, room, stats))
        else:
            sources.append((d, None) for d in read_capture(path, stats))
    start = end = None
    count = 0
    for d, mjr_key in heapq.merge(*sources, key=lambda item: item[0].arrival_ns):
        start = d.arrival_ns if start is None else start
        end = d.arrival_ns
        count += 1
        if progress is not None and count % 5000 == 0:
            progress(ProgressEvent("reading", count, 0, "packets"))
        kind = "rtp" if mjr_key else classify_datagram(d.data)
        if kind == "rtcp":
            _rtcp(room, d)
            continue
        if kind != "rtp":
            room.skipped[f"not RTP ({kind})"] += 1
            continue
        try:
            packet = RtpPacket.parse(d.data)
        except ValueError as exc:
            room.skipped["malformed RTP"] += 1
            room.problems.append(CaptureError(f"malformed RTP: {exc}", file=d.file,
                                              offset=d.offset))
            continue
        if mjr_key is not None:
            pid, label = mjr_key.split("\0")
            state = room.ssrcs.get(packet.ssrc)
            if state is None:
                state = room.bind(packet.ssrc, room.streams[pid, label], d.file)
            room.feed(state, d, packet)
            continue
        _rtp(room, d, packet)
    for ssrc, waiting in list(room.pending.items()):
        _guess(room, ssrc, waiting)
    for ssrc, state in room.ssrcs.items():
        room.deliver(state, state.assembler.flush())
        if state.clock.points >= 2:
            state.report.clocks[ssrc] = state.clock.fit()
        if state.reports:
            state.report.sender_clocks[ssrc] = SenderClock.from_reports(state.reports)
        room.problems.extend(state.assembler.stats.problems)
    for stats in files.values():
        room.problems.extend(stats.problems)
    if progress is not None:
        progress(ProgressEvent("reading", count, count, "packets"))
    return RoomScan(list(room.participants.values()), files, room.skipped, room.problems,
                    start, end)


def _rtp(room: _Room, d: Datagram, packet: RtpPacket) -> None:
    state = room.ssrcs.get(packet.ssrc)
    if state is not None:
        room.feed(state, d, packet)
        return
    if not room.description.participants:
        waiting = room.pending.setdefault(packet.ssrc, [])
        waiting.append((d, packet))
        if len(waiting) >= GUESS_PACKETS:
            _guess(room, packet.ssrc, room.pending.pop(packet.ssrc))
        return
    match = room.description.match_rtp(packet.ssrc, packet.payload_type, d.src, d.dst)
    if match is None or match.codec is None:
        room.skipped["RTP not in the description"] += 1
        return
    stream = match.stream
    p = match.participant
    if match.rtx:
        # the SSRC it repairs: declared (ssrc-group FID), else the stream's current one
        media = room.streams.get((p.id, stream.label()))
        repaired = stream.rtx_ssrcs.get(packet.ssrc) or (media.ssrcs[-1] if media else None)
        if repaired is None or repaired not in room.ssrcs:
            room.skipped["RTX before its stream"] += 1
            return
        try:
            original = unwrap_rtx(packet, match.codec.payload_type, repaired)
        except ValueError:
            room.skipped["malformed RTX"] += 1
            return
        room.feed(room.ssrcs[repaired], d, original)
        return
    try:
        codec_for(match.codec.name)
    except CaptureError:
        room.skipped[f"unsupported codec {match.codec.name}"] += 1
        return
    report = room.stream(p.id, p.name, stream.label(), stream.kind, match.codec.name,
                         match.codec.clock_rate)
    if report.extensions is None and AUDIO_LEVEL_URI in stream.extmap.values():
        report.extensions = HeaderExtensionsMap()
        report.extensions.configure(RTCRtpParameters(headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=i, uri=u) for i, u in stream.extmap.items()]))
    room.feed(room.bind(packet.ssrc, report, d.file), d, packet)


def _guess(room: _Room, ssrc: int, waiting: list[tuple[Datagram, RtpPacket]]) -> None:
    samples = [(p.payload_type, p.payload, bool(p.marker), p.timestamp) for _, p in waiting]
    try:
        guess = guess_stream(samples, ssrc=ssrc)
    except DescriptionError as exc:
        room.skipped["RTP whose codec could not be guessed"] += len(waiting)
        room.problems.append(CaptureError(str(exc), file=waiting[0][0].file, ssrc=ssrc))
        return
    codec = next(iter(guess.stream.codecs.values()))
    name = f"ssrc {ssrc:#010x}"
    report = room.stream(name, name, guess.stream.kind, guess.stream.kind, codec.name,
                         codec.clock_rate)
    report.note = guess.note
    state = room.bind(ssrc, report, waiting[0][0].file)
    for d, packet in waiting:
        room.feed(state, d, packet)


def _rtcp(room: _Room, d: Datagram) -> None:
    try:
        packets = RtcpPacket.parse(d.data)
    except ValueError:
        room.skipped["malformed RTCP"] += 1
        return
    for packet in packets:
        if not isinstance(packet, RtcpSrPacket):
            continue
        info = packet.sender_info
        ntp = ((info.ntp_timestamp >> 32) - NTP_EPOCH_OFFSET
               + (info.ntp_timestamp & 0xFFFFFFFF) / 2**32)
        state = room.ssrcs.get(packet.ssrc)
        if state is not None:
            state.reports.append((ntp, state.unwrap(info.rtp_timestamp)))
        elif len(room.early_reports.setdefault(packet.ssrc, [])) < 8:
            # a report may come before the stream's first packet (FFmpeg sends one first)
            room.early_reports[packet.ssrc].append((ntp, info.rtp_timestamp))
