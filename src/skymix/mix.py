"""The main job: a room's captures in, one composited and mixed recording out.

Two passes over the captures. The first (``scan_room``) learns who is there when, every stream's
clock and what was lost. The second reads them again a batch at a time and walks the recording's
clock frame by frame: each participant's encoded frames wait in a queue until their session time
comes, are decoded then (so decoded pictures never pile up: memory does not grow with the
session), audio is placed sample-exactly on the recording's sample clock (placement.AudioTrack),
the layout is recomputed when someone joins, leaves, turns the camera on or off or starts
speaking, tiles are composited straight into the encoder's frame and the audio blocks mixed.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import av
import numpy as np

from .compose import CompositeState, Overlay, Tile, composite, mix_audio
from .compose.labels import name_label, placeholder
from .decode import OUTPUT_RATE, AudioDecoder, VideoDecoder
from .encode import Container, EncodeSettings, RecordingWriter
from .errors import DecodeError, SkymixError
from .layout import (
    GridSpec,
    Layout,
    LayoutSpec,
    Participant,
    SpeakerTracker,
    compute_layout,
    dbov_from_rms,
)
from .placement import TRACK_CHANNELS, AudioTrack
from .progress import ProgressCallback, ProgressEvent
from .session import SessionSpec
from .sidecars import ChannelsWav, ParticipantFiles, participant_settings
from .streams.assembler import EncodedFrame
from .streams.room import IDLE_NS, RoomReader, RoomScan, RoomStep, scan_room
from .timeline import Segment, StreamTiming, plan_segments, plan_timing

__all__ = ["MixOptions", "MixReport", "mix"]

OnLoss = Literal["freeze", "placeholder"]
NS = 1_000_000_000
#: The second pass reads this far (session ns) ahead of the frame being made: frames are final
#: once the assembler's reorder window has passed them.
LOOKAHEAD_NS = 3 * NS
#: Output frames (or audio blocks) are made in batches of this many: the decode thread decodes
#: a batch's frames in one job (each stream's frames back to back, while its decoder's pictures
#: are in the cache) and the batch's audio is placed, mixed and encoded at once, a quarter of the
#: per-call costs of frame by frame; the speaker tracker still sees every frame's levels.
BATCH_TICKS = 4
#: The decode thread starts on a batch when the compositor is this many frames before it (the
#: decoded pictures waiting are at most a batch and this many frames per participant, ~1 MB
#: each); audio is decoded up to AUDIO_AHEAD_NS beyond the frames it is mixed with, as a block
#: may start before their end.
DECODE_AHEAD = 4
AUDIO_AHEAD_NS = 40_000_000
#: A frame this close outside a stretch of the session still belongs to it.
EDGE_NS = 100_000_000
#: Audio-only recordings advance in blocks of this many samples.
AUDIO_BLOCK = 960
#: Lost audio up to this long is filled by the decoder's concealment (Opus PLC), longer is silence
#: (a muted or departed sender, DTX).
CONCEAL_S = 0.12


@dataclass(frozen=True, slots=True)
class MixOptions:
    """How to lay out, conceal and encode.

    on_loss: after a video loss, hold the last good picture ("freeze") or show the placeholder
    ("placeholder") until the next keyframe. trim: leave out the stretches in which nobody is
    present. labels: draw each participant's display name on their tile. per_participant: a
    folder for a recording of each participant on their own; channels: a WAV with one channel
    per participant (both from the same decode as the mix).
    """

    layout: LayoutSpec = field(default_factory=GridSpec)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    container: Container = "mp4"
    on_loss: OnLoss = "freeze"
    trim: bool = False
    labels: bool = True
    per_participant: Path | None = None
    channels: Path | None = None


@dataclass(slots=True)
class MixReport:
    """What was done, for the caller, the operator and the tests (``--report``)."""

    output: str
    session_start_ns: int
    duration_s: float
    frames: int
    samples: int
    participants: list[dict[str, object]]
    streams: list[dict[str, object]]
    layouts: list[dict[str, object]]
    segments: list[dict[str, float]]
    scan: dict[str, object]
    files: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for a person: who, how synced, what was concealed, where the file is."""
        lines = [
            f"skymix: {len(self.participants)} participants, {self.duration_s:.1f} s, "
            f"{self.frames} frames -> {Path(self.output).resolve()}"
        ]
        for p in self.participants:
            video, audio = p["video"], p["audio"]
            assert isinstance(video, dict) and isinstance(audio, dict)
            spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in p["presence_s"])  # type: ignore[attr-defined]
            lines.append(
                f"  {p['name']}: present {spans}; video {video['decoded']} decoded, "
                f"{video['dropped']} dropped, {video['decode_errors']} errors; audio "
                f"{audio['decoded']} frames, {audio['concealed']} losses concealed, "
                f"{audio['gaps']} silent gaps"
            )
        for s in self.streams:
            lines.append(
                f"  sync {s['participant']} {s['kind']} {s['ssrc']}: {s['sync']}, "
                f"drift {s['drift_ppm']} ppm"
            )
        return "\n".join(lines)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


@dataclass(slots=True)
class _Counts:
    decoded: int = 0
    decode_errors: int = 0
    dropped: int = 0
    concealed: int = 0
    shown_placeholder: int = 0
    undecodable: int = 0  # frames of a stream no decoder takes (an unusual clock rate)

    def add_decoders(self, decoders: Sequence[VideoDecoder | AudioDecoder]) -> None:
        """Take the decoders' own counts (pictures out, errors, frames skipped to a keyframe)."""
        self.decode_errors += sum(d.stats.errors for d in decoders)
        if decoders and isinstance(decoders[0], VideoDecoder):
            self.decoded += sum(d.stats.frames_out for d in decoders)
            self.dropped += sum(d.stats.skipped for d in decoders)


@dataclass(slots=True)
class _AudioBatch:
    """A batch's audio, mixed on the decode thread: the mix, each participant's block (people
    in the mixer's order) and each frame's levels (dBov) by participant id."""

    mixed: np.ndarray
    blocks: np.ndarray
    levels: list[dict[str, float]]


class _Person:
    """One participant's queues, decoders, last picture and audio track."""

    def __init__(
        self,
        pid: str,
        name: str,
        video_idle: list[list[int]],
        presence: list[list[int]],
        lost: dict[int, list[int]],
    ) -> None:
        self.id = pid
        self.name = name
        self.video_idle = video_idle
        self.presence = presence
        self.lost = lost  # video ssrc -> first (unwrapped) sequence numbers of its losses
        self.video: deque[tuple[float, str, EncodedFrame]] = deque()
        self.audio: deque[tuple[float, str, EncodedFrame]] = deque()
        self.video_decoders: dict[int, VideoDecoder] = {}
        self.audio_decoders: dict[int, AudioDecoder] = {}
        self.audio_next: dict[int, int] = {}  # ssrc -> the timestamp that continues its audio
        self.pcm: deque[tuple[float, np.ndarray]] = deque()  # decoded: (output sample, block)
        self.pictures: deque[tuple[float, av.VideoFrame, tuple[int, int]]] = deque()
        self.picture: av.VideoFrame | None = None
        self.picture_ns = -math.inf
        self.picture_key: tuple[int, int] | None = None  # (ssrc, its last unwrapped seq)
        self.track = AudioTrack()
        self.video_counts = _Counts()
        self.audio_counts = _Counts()
        self.has_video_stream = False

    def present(self, s: float) -> bool:
        return any(a <= s <= b + IDLE_NS["audio"] // 10 for a, b in self.presence)

    def camera_off(self, s: float) -> bool:
        return any(a < s < b for a, b in self.video_idle)


#: A loss that starts within this many packets after the picture shown is what stopped it.
LOSS_REACH = 64


def _lost_after(person: _Person, ssrc: int, last_seq: int) -> bool:
    """Whether the stream lost packets right after the picture ending at last_seq."""
    starts = person.lost.get(ssrc)
    if not starts:
        return False
    i = bisect.bisect_right(starts, last_seq)
    return i < len(starts) and starts[i] <= last_seq + LOSS_REACH


class _Mixer:
    def __init__(
        self,
        captures: Sequence[str | Path],
        output: str | Path,
        description: SessionSpec | None,
        options: MixOptions,
        progress: ProgressCallback | None,
    ) -> None:
        self.captures = list(captures)
        self.output = Path(output)
        self.description = description
        self.options = options
        self.progress = progress
        self.scan: RoomScan = scan_room(self.captures, description, progress=progress)
        self.timing: dict[int, StreamTiming] = plan_timing(self.scan)
        self.segments: list[Segment] = plan_segments(self.scan, options.trim)
        self.codecs: dict[int, tuple[str, str, int]] = {}  # ssrc -> (kind, codec, clock rate)
        self.people: dict[str, _Person] = {}
        for p in self.scan.participants:
            idle = [span for s in p.streams if s.kind == "video" for span in s.idle]
            lost = {
                ssrc: sorted(g.first_seq for g in st.gaps)
                for s in p.streams
                if s.kind == "video"
                for ssrc, st in s.stats.items()
                if st.gaps
            }
            person = _Person(p.id, p.name, idle, p.presence, lost)
            person.has_video_stream = any(s.kind == "video" for s in p.streams)
            self.people[p.id] = person
            for s in p.streams:
                for ssrc in s.ssrcs:
                    self.codecs[ssrc] = (s.kind, s.codec, s.clock_rate)
        self.has_video = options.encode.video and any(
            person.has_video_stream for person in self.people.values()
        )
        self.has_audio = options.encode.audio and any(
            s.kind == "audio" for p in self.scan.participants for s in p.streams
        )
        if self.has_audio and options.encode.audio_rate != OUTPUT_RATE:
            raise SkymixError(
                f"the mix places audio at {OUTPUT_RATE} Hz (what every decoder "
                f"gives), not at audio_rate {options.encode.audio_rate}"
            )
        if not (self.has_video or self.has_audio):
            raise SkymixError(
                "nothing to mix: the captures hold no decodable audio or video"
                + (
                    f" ({len(self.scan.problems)} problems, first: {self.scan.problems[0]})"
                    if self.scan.problems
                    else ""
                )
            )
        self.layouts: list[dict[str, object]] = []
        self._labels: dict[tuple[str, int, int], tuple[Overlay, ...]] = {}  # (id, w, h)
        self.samples_done = 0  # output audio samples mixed (on the decode thread)
        self.reader: Iterator[RoomStep] = iter(())
        self.read_to = -math.inf

    # -- the session clock --------------------------------------------------------------------

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

    # -- reading --------------------------------------------------------------------------------

    def route(self, step: RoomStep) -> None:
        """Queue a batch's frames by person and kind, in session-time order: a batch may hold
        several SSRCs of one stream (a renegotiation), each in its own media order."""
        timed: dict[tuple[str, str], list[list[tuple[float, str, EncodedFrame]]]] = {}
        for pid, kind, frames in step.frames:
            if pid not in self.people or not (
                self.has_video if kind == "video" else self.has_audio
            ):
                continue  # a kind the recording leaves out is not kept
            run = [
                (timing.session_ns(frame.timestamp), kind, frame)
                for frame in frames
                if (timing := self.timing.get(frame.ssrc)) is not None
            ]
            timed.setdefault((pid, kind), []).append(run)
        for (pid, kind), runs in timed.items():
            person = self.people[pid]
            queue = person.video if kind == "video" else person.audio
            queue.extend(
                runs[0] if len(runs) == 1 else heapq.merge(*runs, key=lambda item: item[0])
            )

    # -- video ----------------------------------------------------------------------------------

    def decode_video(self, until: float) -> None:
        """Decode everyone's video frames due by `until` (session ns). Runs on the decode
        thread, a few output frames ahead of the compositor: only it touches the decoders and
        pops the encoded queues; the pictures go to each person's `pictures` queue."""
        for person in self.people.values():
            while person.video and person.video[0][0] <= until:
                at, _, frame = person.video.popleft()
                decoder = person.video_decoders.get(frame.ssrc)
                if decoder is None:
                    _, codec, _ = self.codecs[frame.ssrc]
                    try:
                        decoder = person.video_decoders[frame.ssrc] = VideoDecoder(codec, threads=1)
                    except DecodeError:
                        person.video_counts.undecodable += 1
                        continue  # a stream no decoder takes costs that stream only
                pictures = decoder.decode(frame)
                if pictures:
                    person.pictures.append((at, pictures[-1], (frame.ssrc, frame.last_seq)))

    @staticmethod
    def take_picture(person: _Person, until: float) -> None:
        """Show the latest decoded picture due by `until` (session ns)."""
        while person.pictures and person.pictures[0][0] <= until:
            person.picture_ns, person.picture, person.picture_key = person.pictures.popleft()

    def shows_video(self, person: _Person, s: float, period: float) -> bool:
        if person.picture is None or person.camera_off(s):
            return False
        if s - person.picture_ns > IDLE_NS["video"]:
            return False
        if (
            self.options.on_loss == "placeholder"
            and s - person.picture_ns > 2 * period
            and person.picture_key is not None
            and _lost_after(person, *person.picture_key)
        ):
            return False
        return True

    # -- audio ----------------------------------------------------------------------------------

    def decode_audio(self, until: float, rate: int) -> None:
        """Decode everyone's audio frames due by `until` (session ns) into their `pcm` queue
        with the output sample each belongs at (on the decode thread, like decode_video)."""
        for person in self.people.values():
            while person.audio and person.audio[0][0] <= until:
                at, _, frame = person.audio.popleft()
                out = self.output_ns(at)
                if out is None:
                    person.audio_counts.dropped += 1
                    continue
                decoder = person.audio_decoders.get(frame.ssrc)
                if decoder is None:
                    _, codec, clock_rate = self.codecs[frame.ssrc]
                    try:
                        decoder = person.audio_decoders[frame.ssrc] = AudioDecoder(
                            codec, clock_rate
                        )
                    except DecodeError:
                        person.audio_counts.undecodable += 1
                        continue
                expected = person.audio_next.get(frame.ssrc)
                missing = 0 if expected is None else frame.timestamp - expected
                if 0 < missing <= decoder.clock_rate * CONCEAL_S:
                    # a lost packet or two: the decoder's concealment, where the audio belonged
                    assert expected is not None
                    gap_out = self.output_ns(self.timing[frame.ssrc].session_ns(expected))
                    if gap_out is not None:
                        person.pcm.append(
                            (gap_out * rate / NS - decoder.delay, decoder.conceal(missing))
                        )
                        person.audio_counts.concealed += 1
                samples = decoder.decode(frame)
                if len(samples):
                    person.audio_counts.decoded += 1
                    person.pcm.append((out * rate / NS - decoder.delay, samples))
                    person.audio_next[frame.ssrc] = frame.timestamp + len(samples) // decoder.ratio

    @staticmethod
    def place_audio(person: _Person, until_sample: int) -> None:
        """Place the person's decoded audio that starts before until_sample on their track."""
        while person.pcm and person.pcm[0][0] < until_sample:
            ideal, samples = person.pcm.popleft()
            person.track.place(ideal, samples)

    def decode_batch(
        self, k: int, ticks: int, tick_ns: float, settings: EncodeSettings
    ) -> _AudioBatch | None:
        """The decode thread's job for the batch of output frames (or blocks) from tick k:
        decode its video, decode and mix its audio. Limits go through the output clock, so a
        trimmed gap does not hide what follows it."""
        start_out = k * tick_ns
        if self.has_video:
            self.decode_video(self.session_ns(start_out + (BATCH_TICKS - 0.5) * tick_ns))
        if not self.has_audio:
            return None
        rate = settings.audio_rate
        self.decode_audio(self.session_ns(start_out + BATCH_TICKS * tick_ns + AUDIO_AHEAD_NS), rate)
        ends = [round((j + 1) * tick_ns * rate / NS) for j in range(k, min(k + BATCH_TICKS, ticks))]
        return self.mix_batch(ends, rate, settings.audio_channels)

    def mix_batch(self, ends: list[int], rate: int, channels: int) -> _AudioBatch:
        """Place, read and mix everyone's audio up to the last of `ends` (output samples where
        the batch's frames end), with each frame's levels for the speaker tracker."""
        end = ends[-1]
        count = end - self.samples_done
        people = list(self.people.values())
        # the tracks are stereo (every decoder gives stereo); the mix has the recording's channels
        blocks = np.empty((len(people), count, TRACK_CHANNELS), np.float32)
        for person, block in zip(people, blocks):
            self.place_audio(person, end + rate // 50)
            person.track.read(self.samples_done, count, out=block)
        # each frame's mean power per person: sums of squares over the frame's samples (of both
        # channels: a reduction along the last axis of 2 would be slow)
        starts = [0] + [(e - self.samples_done) * TRACK_CHANNELS for e in ends[:-1]]
        lengths = np.diff(starts + [count * TRACK_CHANNELS])
        power = (
            np.add.reduceat(np.square(blocks.reshape(len(people), -1)), starts, axis=1) / lengths
            if count and people
            else np.zeros((len(people), len(ends)))
        )
        levels = [
            {person.id: dbov_from_rms(math.sqrt(p)) for person, p in zip(people, tick)}
            for tick in power.T.tolist()
        ]
        mixed = np.zeros((count, channels), np.float32)
        mix_audio(list(blocks), mixed)
        self.samples_done = end
        return _AudioBatch(mixed, blocks, levels)

    # -- the recording --------------------------------------------------------------------------

    def run(self) -> MixReport:
        options = self.options
        settings = EncodeSettings(
            **{**asdict(options.encode), "video": self.has_video, "audio": self.has_audio}
        )
        rate = settings.audio_rate
        total_ns = sum(seg.end_ns - seg.start_ns for seg in self.segments)
        if self.has_video:
            ticks = max(1, math.ceil(total_ns * settings.fps / NS))
            tick_ns = NS / settings.fps
        else:
            ticks = max(1, math.ceil(total_ns * rate / NS / AUDIO_BLOCK))
            tick_ns = AUDIO_BLOCK * NS / rate
        partial = self.output.with_name(f".{self.output.name}.partial")
        ids = list(self.people)
        channels = per_person = None
        try:
            if options.channels is not None and self.has_audio:
                channels = ChannelsWav(options.channels, ids, rate)
            if options.per_participant is not None:
                per_person = ParticipantFiles(
                    options.per_participant,
                    [(pid, self.people[pid].name) for pid in ids],
                    participant_settings(settings),
                    options.container,
                )
            frames, samples = self.record(partial, settings, ticks, tick_ns, channels, per_person)
        except BaseException:
            partial.unlink(missing_ok=True)
            for sidecar in (channels, per_person):
                if sidecar is not None:
                    try:
                        sidecar.abort()
                    except Exception:  # noqa: BLE001 - the original error is the one raised
                        pass
            raise
        partial.replace(self.output)  # the recording is complete or absent, never half
        for sidecar in (channels, per_person):
            if sidecar is not None:
                sidecar.finish()
        return self.report(frames, samples, ticks * tick_ns / NS, per_person, channels)

    def read_until(self, session_ns: float) -> None:
        """Read batches of the second pass until every frame due by session_ns is queued."""
        while self.read_to < session_ns + LOOKAHEAD_NS:
            step = next(self.reader, None)
            if step is None:
                self.read_to = math.inf
                return
            self.route(step)
            self.read_to = math.inf if step.read_to_ns is None else step.read_to_ns

    def record(
        self,
        path: Path,
        settings: EncodeSettings,
        ticks: int,
        tick_ns: float,
        channels: ChannelsWav | None,
        per_person: ParticipantFiles | None,
    ) -> tuple[int, int]:
        """The second pass: every output frame (or audio block) in turn, decoded on a thread of
        its own a batch (BATCH_TICKS frames) at a time, DECODE_AHEAD frames ahead, so
        decoding overlaps compositing and the encoders (PyAV's decode and encode calls release
        the GIL)."""
        self.reader = iter(RoomReader(self.captures, self.description, fit_clocks=False))
        self.read_to = -math.inf
        step = _Step(self, settings, tick_ns, channels, per_person)
        decoded: deque[Future[_AudioBatch | None]] = deque()
        with (
            RecordingWriter(path, settings, self.options.container) as writer,
            ThreadPoolExecutor(1, thread_name_prefix="skymix-decode") as decoder,
        ):
            batch = 0  # the first frame of the next batch to decode
            for k in range(ticks):
                while batch < min(ticks, k + DECODE_AHEAD + 1):
                    self.read_until(
                        self.session_ns((batch + BATCH_TICKS) * tick_ns + AUDIO_AHEAD_NS)
                    )
                    decoded.append(
                        decoder.submit(self.decode_batch, batch, ticks, tick_ns, settings)
                    )
                    batch += BATCH_TICKS
                s = self.session_ns(k * tick_ns)
                self.read_until(s)
                audio = decoded.popleft().result() if k % BATCH_TICKS == 0 else None
                step.run(writer, k, s, audio)
                if self.progress is not None:
                    self.progress(
                        ProgressEvent(
                            "mixing", k + 1, ticks, "frames" if self.has_video else "blocks"
                        )
                    )
            return writer.frames_written, writer.samples_written

    def tiles(self, layout: Layout) -> list[Tile]:
        tiles = []
        for placement in layout.placements:
            person = self.people[placement.id]
            rect = placement.rect
            overlays = self._labels.get((person.id, rect.w, rect.h))
            if overlays is None:
                overlays = self._labels[person.id, rect.w, rect.h] = (
                    tuple(name_label(person.name, rect.w, rect.h)) if self.options.labels else ()
                )
            if placement.has_video and person.picture is not None:
                tiles.append(Tile(person.picture, rect, placement.fit, overlays=overlays))
            else:
                person.video_counts.shown_placeholder += 1
                tiles.append(
                    Tile(placeholder(person.name, rect.w, rect.h), rect, "cover", overlays=overlays)
                )
        return tiles

    def note_layout(self, t_out: float, layout: Layout) -> None:
        self.layouts.append(
            {
                "at_s": round(t_out / NS, 4),
                "tiles": [
                    {
                        "id": p.id,
                        "x": p.rect.x,
                        "y": p.rect.y,
                        "w": p.rect.w,
                        "h": p.rect.h,
                        "video": p.has_video,
                        "speaker": p.speaker,
                    }
                    for p in layout.placements
                ],
                "hidden": list(layout.hidden),
            }
        )

    def report(
        self,
        frames: int,
        samples: int,
        duration_s: float,
        per_person: ParticipantFiles | None,
        channels: ChannelsWav | None,
    ) -> MixReport:
        people: list[dict[str, object]] = []
        for p in self.scan.participants:
            person = self.people[p.id]
            person.video_counts.add_decoders(list(person.video_decoders.values()))
            # frames the ingest never handed over: waiting for a keyframe after a loss
            person.video_counts.dropped += sum(
                st.frames_skipped_for_keyframe
                for s in p.streams
                if s.kind == "video"
                for st in s.stats.values()
            )
            person.audio_counts.add_decoders(list(person.audio_decoders.values()))
            people.append(
                {
                    "id": p.id,
                    "name": p.name,
                    "presence_s": [
                        [round(self._rel(a), 4), round(self._rel(b), 4)] for a, b in p.presence
                    ],
                    "video": asdict(person.video_counts),
                    "audio": {**asdict(person.audio_counts), **asdict(person.track.stats)},
                }
            )
        streams: list[dict[str, object]] = []
        for ssrc, t in self.timing.items():
            streams.append(
                {
                    "ssrc": f"{ssrc:#010x}",
                    "participant": t.participant,
                    "kind": t.kind,
                    "sync": t.via,
                    "drift_ppm": round(t.drift_ppm, 2),
                    "starts_at_s": round(self._rel(t.session_ns(t.rtp_origin)), 4),
                }
            )
        return MixReport(
            output=str(self.output),
            session_start_ns=self.segments[0].start_ns,
            duration_s=round(duration_s, 4),
            frames=frames,
            samples=samples,
            participants=people,
            streams=streams,
            layouts=self.layouts,
            segments=[
                {
                    "from_s": round(self._rel(s.start_ns), 4),
                    "to_s": round(self._rel(s.end_ns), 4),
                    "output_s": round(s.output_ns / NS, 4),
                }
                for s in self.segments
            ],
            scan=self.scan.to_json(),
            files={
                "participants": {pid: str(path) for pid, path in per_person.paths.items()}
                if per_person
                else {},
                "channels": {"path": str(channels.path), "order": channels.ids} if channels else {},
            },
        )

    def _rel(self, session_ns: float) -> float:
        """Seconds of the session clock from the recording's start."""
        return (session_ns - self.segments[0].start_ns) / NS if self.segments else 0.0


class _Step:
    """One output frame (or audio block): mix the audio, choose the layout, composite."""

    def __init__(
        self,
        mixer: _Mixer,
        settings: EncodeSettings,
        tick_ns: float,
        channels: ChannelsWav | None,
        per_person: ParticipantFiles | None,
    ) -> None:
        self.mixer = mixer
        self.settings = settings
        self.tick_ns = tick_ns
        self.channels = channels
        self.per_person = per_person
        self.tracker = SpeakerTracker()
        self.layout: Layout | None = None
        self.layout_key: object = None
        self.states: dict[int, CompositeState] = {}  # by id of the writer's frame drawn into
        self.levels: list[dict[str, float]] = []  # of the batch's ticks, audio mixed ahead

    def run(self, writer: RecordingWriter, k: int, s: int, audio: _AudioBatch | None) -> None:
        """Tick k (session instant s); audio: the batch's mixed audio, on its first tick."""
        mixer = self.mixer
        levels: dict[str, float] = {}
        if mixer.has_audio:
            if audio is not None:
                self.write_audio(writer, audio)
            levels = self.levels[k % BATCH_TICKS]
        if not mixer.has_video:
            return
        people = mixer.people.values()
        for person in people:
            mixer.take_picture(person, s + self.tick_ns / 2)
        present = [p for p in people if p.present(s)]
        speaker = self.tracker.update(s, levels)
        video = {p.id: mixer.shows_video(p, s, self.tick_ns) for p in present}
        key = (tuple((p.id, video[p.id]) for p in present), speaker)
        if key != self.layout_key:
            self.layout_key = key
            self.layout = compute_layout(
                (self.settings.width, self.settings.height),
                [Participant(p.id, video[p.id]) for p in present],
                speaker,
                mixer.options.layout,
            )
            mixer.note_layout(k * self.tick_ns, self.layout)
        assert self.layout is not None
        out = writer.new_frame()
        self.states[id(out)] = composite(
            mixer.tiles(self.layout),
            out,
            background=self.layout.background,
            previous=self.states.get(id(out)),
            threads=1,
        )
        writer.write_video(out)
        if self.per_person is not None:
            for person in people:
                self.per_person.write_video(
                    person.id,
                    person.picture if mixer.shows_video(person, s, self.tick_ns) else None,
                )

    def write_audio(self, writer: RecordingWriter, batch: _AudioBatch) -> None:
        """Encode the batch's mix, write the sidecars' audio, keep its frames' levels."""
        writer.write_audio(batch.mixed)
        self.levels = batch.levels
        if self.channels is not None:
            self.channels.write(list(batch.blocks))
        if self.per_person is not None:
            for person, block in zip(self.mixer.people.values(), batch.blocks):
                self.per_person.write_audio(person.id, block)


def mix(
    captures: Sequence[str | Path],
    output: str | Path,
    *,
    description: SessionSpec | None = None,
    options: MixOptions | None = None,
    progress: ProgressCallback | None = None,
) -> MixReport:
    """Mix a room's captures into one recording at ``output`` and say what was done.

    Raises SkymixError when the captures hold nothing to mix; damaged parts of the captures
    cost only those parts (see the report's ``scan.problems``).
    """
    if options is None:
        options = MixOptions(container="webm" if Path(output).suffix.lower() == ".webm" else "mp4")
    mixer = _Mixer(captures, output, description, options, progress)
    if not mixer.segments:
        raise SkymixError("nothing to mix: no participant is present in the captures")
    return mixer.run()
