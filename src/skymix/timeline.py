"""The session clock: where each stream's media time lands, who is present and who speaks, and
which stretch of the session the recording shows (and where each of its instants lands in it).

The session clock is the relay's (capture arrival times). Each SSRC's RTP time is mapped onto it
by its clock fit (offset and drift against the relay, from the first pass over the captures).
Video is tied to its participant's audio through their sender reports where both streams have
them (the sender's own NTP clock says which video frame goes with which audio sample): that is
lip sync, exact to the sender's capture, whatever the two streams' network paths did. Without
sender reports each stream stands on its own fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ComposeError
from .report import SegmentSpan, StreamSync
from .streams.room import IDLE_NS, ParticipantReport, RoomScan, StreamReport
from .sync import ClockFit, SenderClock

__all__ = [
    "OutputClock",
    "Presence",
    "Segment",
    "SpeakerTracker",
    "StreamTiming",
    "dbov_from_rfc6464",
    "dbov_from_rms",
    "plan_segments",
    "plan_timing",
]

#: Lip sync through sender reports is refused when it moves video this far from its own fit:
#: the reports' NTP or RTP times are then not to be trusted.
LIP_SYNC_LIMIT_NS = 1_000_000_000
#: With trimming, absences shorter than this stay in the recording (a dropped connection).
TRIM_GAP_NS = 2_000_000_000
NS = 1_000_000_000
#: The level of silence in dBov (RFC 6464's lowest).
SILENT_DBOV = -127.0
#: A frame this close outside a stretch of the session still belongs to it.
EDGE_NS = 100_000_000
#: Presence outlasts the last packet by this much (the tail of a participant's last audio frame).
PRESENCE_TAIL_NS = IDLE_NS["audio"] // 10


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """session_ns = offset_ns + (rtp - rtp_origin) * ns_per_tick for one SSRC.

    via: "arrival" (the stream's own clock fit) or "sender reports" (lip-synced to audio).
    drift_ppm / offset_ns of the stream's own fit, for the report.
    """

    ssrc: int
    participant: str
    kind: str
    clock_rate: int
    rtp_origin: int
    offset_ns: float
    ns_per_tick: float
    via: str
    drift_ppm: float

    def session_ns(self, rtp: int) -> float:
        return self.offset_ns + (rtp - self.rtp_origin) * self.ns_per_tick

    def result(self, clock: OutputClock) -> StreamSync:
        """This stream in the report: how it was synced and where it starts."""
        return StreamSync(
            ssrc=f"{self.ssrc:#010x}",
            participant=self.participant,
            kind="video" if self.kind == "video" else "audio",
            sync=self.via,
            drift_ppm=round(self.drift_ppm, 2),
            starts_at_s=clock.seconds(self.session_ns(self.rtp_origin)),
        )

    @classmethod
    def of_fit(cls, ssrc: int, stream: StreamReport, fit: ClockFit) -> StreamTiming:
        return cls(
            ssrc,
            stream.participant,
            stream.kind,
            fit.clock_rate,
            fit.rtp_origin,
            fit.offset_ns,
            fit.ns_per_tick,
            "arrival",
            fit.drift_ppm,
        )


def _anchor(participant: ParticipantReport) -> tuple[int, StreamReport] | None:
    """The audio SSRC (with its stream) that a participant's video is lip-synced to: the one
    with the most clock points among those with sender reports."""
    best: tuple[int, int, StreamReport] | None = None
    for stream in participant.streams:
        if stream.kind != "audio":
            continue
        for ssrc, fit in stream.clocks.items():
            if ssrc in stream.sender_clocks and (best is None or fit.points > best[0]):
                best = (fit.points, ssrc, stream)
    return None if best is None else (best[1], best[2])


def plan_timing(scan: RoomScan) -> dict[int, StreamTiming]:
    """Each SSRC's mapping onto the session clock (a stream of under a second has one window:
    its offset at the nominal rate)."""
    timing: dict[int, StreamTiming] = {}
    for participant in scan.participants:
        anchor = _anchor(participant)
        for stream in participant.streams:
            for ssrc, fit in stream.clocks.items():
                own = StreamTiming.of_fit(ssrc, stream, fit)
                timing[ssrc] = own
                sender = stream.sender_clocks.get(ssrc)
                if stream.kind != "video" or anchor is None or sender is None:
                    continue
                audio_ssrc, audio_stream = anchor
                audio_fit = audio_stream.clocks[audio_ssrc]
                audio_sender = audio_stream.sender_clocks[audio_ssrc]

                def lip(
                    rtp: int,
                    sender: SenderClock = sender,
                    fit: ClockFit = fit,
                    audio_fit: ClockFit = audio_fit,
                    audio_sender: SenderClock = audio_sender,
                ) -> float:
                    ntp = sender.ntp_of(rtp, fit.clock_rate)
                    return float(
                        audio_fit.arrival_ns(audio_sender.rtp_of(ntp, audio_fit.clock_rate))
                    )

                origin = fit.rtp_origin
                step = 10 * fit.clock_rate  # the map is linear: two points define it
                at_origin = lip(origin)
                per_tick = (lip(origin + step) - at_origin) / step
                middle = origin + fit.points * fit.clock_rate // 2
                synced = at_origin + (middle - origin) * per_tick
                if per_tick > 0 and abs(synced - own.session_ns(middle)) < LIP_SYNC_LIMIT_NS:
                    timing[ssrc] = StreamTiming(
                        ssrc,
                        stream.participant,
                        "video",
                        fit.clock_rate,
                        origin,
                        at_origin,
                        per_tick,
                        "sender reports",
                        fit.drift_ppm,
                    )
    return timing


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch [start_ns, end_ns) of the session clock that the recording shows, starting at
    output_ns in the recording."""

    start_ns: int
    end_ns: int
    output_ns: int


def plan_segments(scan: RoomScan, trim: bool) -> list[Segment]:
    """The session stretches the recording shows: from the first participant's join to the last
    one's leave, or with trim, only where someone is present (absences under TRIM_GAP_NS kept)."""
    spans = sorted((a, b) for p in scan.participants for a, b in p.presence)
    if not spans:
        return []
    if not trim:
        spans = [(spans[0][0], max(b for _, b in spans))]
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a - merged[-1][1] < TRIM_GAP_NS:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    segments = []
    out = 0
    for a, b in merged:
        segments.append(Segment(a, b, out))
        out += b - a
    return segments


class OutputClock:
    """Maps the session clock to the recording's and back, across the segments it shows."""

    def __init__(self, segments: list[Segment]) -> None:
        if not segments:
            raise ValueError("an output clock needs at least one segment")
        self.segments = segments

    @property
    def start_ns(self) -> int:
        """The session instant the recording starts at."""
        return self.segments[0].start_ns

    @property
    def duration_ns(self) -> int:
        return sum(seg.end_ns - seg.start_ns for seg in self.segments)

    def output_ns(self, session_ns: float) -> float | None:
        """Where a session instant lands in the recording (None: trimmed out)."""
        for seg in self.segments:
            # a first packet that waited in the network maps a little before its own arrival
            if seg.start_ns - EDGE_NS <= session_ns < seg.end_ns + EDGE_NS:
                return seg.output_ns + session_ns - seg.start_ns
        return None

    def session_ns(self, output_ns: float) -> int:
        """The session instant shown at output_ns (integer ns: a float has too few digits for
        ns since 1970, and the first frame must fall exactly on the first arrival)."""
        for seg in reversed(self.segments):
            if output_ns >= seg.output_ns:
                return seg.start_ns + round(output_ns - seg.output_ns)
        return self.segments[0].start_ns

    def spans(self) -> list[SegmentSpan]:
        """The segments in the report: session stretches and where each starts in the output."""
        return [
            SegmentSpan(
                from_s=self.seconds(s.start_ns),
                to_s=self.seconds(s.end_ns),
                output_s=round(s.output_ns / NS, 4),
            )
            for s in self.segments
        ]

    def seconds(self, session_ns: float) -> float:
        """Seconds of the session clock from the recording's start, rounded to 0.1 ms."""
        return round((session_ns - self.segments[0].start_ns) / 1e9, 4)


@dataclass(frozen=True, slots=True)
class Presence:
    """When one participant is in the room and when their camera is off, on the session clock
    (from the first pass: media spans, or the description's join and leave times)."""

    spans: tuple[tuple[int, int], ...]
    camera_off_spans: tuple[tuple[int, int], ...]
    has_video: bool

    @classmethod
    def of(cls, participant: ParticipantReport) -> Presence:
        return cls(
            tuple((a, b) for a, b in participant.presence),
            tuple((a, b) for s in participant.streams if s.kind == "video" for a, b in s.idle),
            any(s.kind == "video" for s in participant.streams),
        )

    def present(self, session_ns: float) -> bool:
        return any(a <= session_ns <= b + PRESENCE_TAIL_NS for a, b in self.spans)

    def camera_off(self, session_ns: float) -> bool:
        return any(a < session_ns < b for a, b in self.camera_off_spans)


def dbov_from_rms(rms: float) -> float:
    """The level in dBov of a block whose RMS is ``rms`` relative to full scale (1.0 for float
    samples, 32768 for int16 already divided): 20 log10(rms), silence -127 as in RFC 6464."""
    if rms <= 0.0:
        return SILENT_DBOV
    return max(SILENT_DBOV, 20.0 * math.log10(rms))


def dbov_from_rfc6464(level: int) -> float:
    """The level in dBov of an RFC 6464 audio level header value (0..127 means -0..-127 dBov).

    A packet whose voice-activity bit is clear can be passed as silence (-127) instead.
    """
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 127:
        raise ComposeError(f"an RFC 6464 level is an integer 0..127, got {level!r}")
    return -float(level)


class SpeakerTracker:
    """Chooses the active speaker from per-participant audio levels, with hysteresis.

    Feed update() each block of levels (dBov, e.g. every 20 ms audio block or every output
    frame) with the caller's time in ns. Rules (docs/layouts.md):

    - a participant speaks in a block when their level is at least ``speech_db``;
    - another participant is *ahead* in a block when they speak and are at least ``switch_db``
      louder than the current speaker in that block (missing from ``levels``: silent);
    - the candidate is the loudest participant ahead; they stay candidate through blocks where
      they are not ahead as long as those last at most ``bridge`` seconds (pauses between words);
    - the candidate becomes the speaker in a block where they are ahead, have been candidate for
      at least ``hold`` seconds, and the current speaker has not spoken for ``quiet`` seconds;
    - nobody speaking changes nothing: silence keeps the last speaker.

    With no speaker yet, the first candidate held for ``hold`` seconds becomes the speaker.
    """

    def __init__(
        self,
        *,
        switch_db: float = 6.0,
        hold: float = 1.0,
        quiet: float = 0.5,
        bridge: float = 0.3,
        speech_db: float = -50.0,
    ) -> None:
        for name, value in (
            ("switch_db", switch_db),
            ("hold", hold),
            ("quiet", quiet),
            ("bridge", bridge),
        ):
            if not value >= 0:
                raise ComposeError(f"{name} must be >= 0, got {value!r}")
        self.switch_db = switch_db
        self.speech_db = speech_db
        self._hold = round(hold * NS)
        self._quiet = round(quiet * NS)
        self._bridge = round(bridge * NS)
        self._speaker: str | None = None
        self._spoke_ns: int | None = None
        self._candidate: str | None = None
        self._since_ns = 0
        self._ahead_ns = 0
        self._now_ns: int | None = None

    @property
    def speaker(self) -> str | None:
        """The active speaker, None until someone has spoken long enough."""
        return self._speaker

    def update(self, now_ns: int, levels: Mapping[str, float]) -> str | None:
        """Take one block of levels (dBov) at time ``now_ns``; return the active speaker.

        Times must not go backwards. Participants missing from ``levels`` are silent.
        """
        if self._now_ns is not None and now_ns < self._now_ns:
            raise ComposeError(f"time went backwards: {now_ns} ns after {self._now_ns} ns")
        self._now_ns = now_ns
        current = -math.inf if self._speaker is None else levels.get(self._speaker, -math.inf)
        if current >= self.speech_db:
            self._spoke_ns = now_ns
        ahead = {
            who: level
            for who, level in levels.items()
            if who != self._speaker
            and level >= self.speech_db
            and level >= current + self.switch_db
        }
        if self._candidate in ahead:
            self._ahead_ns = now_ns
        elif self._candidate is None or now_ns - self._ahead_ns > self._bridge:
            if ahead:
                self._candidate = max(ahead, key=lambda who: ahead[who])  # first of equals
                self._since_ns = self._ahead_ns = now_ns
            else:
                self._candidate = None
        if (
            self._candidate is not None
            and self._ahead_ns == now_ns
            and now_ns - self._since_ns >= self._hold
            and (self._spoke_ns is None or now_ns - self._spoke_ns >= self._quiet)
        ):
            self._speaker, self._spoke_ns, self._candidate = self._candidate, now_ns, None
        return self._speaker

    def remove(self, participant: str) -> None:
        """Forget a participant who left: if they were the speaker there is none until the next
        candidate is held (the layout shows the first participant meanwhile)."""
        if self._speaker == participant:
            self._speaker, self._spoke_ns = None, None
        if self._candidate == participant:
            self._candidate = None
