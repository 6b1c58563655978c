"""One participant as a source of pictures and audio during a mix: their encoded frames waiting
for their time, their decoders, the picture shown and the audio track, and the concealment
policy that decides what a loss looks and sounds like.

Concealment lives here, with the decoders, because it is decided from what they did: after a
video loss the last good picture is held ("freeze") or the placeholder shown ("placeholder")
until the next keyframe decodes; audio losses up to CONCEAL_S are filled by the decoder's own
concealment (Opus PLC) where the audio belonged, longer ones stay silent (a muted or departed
sender, DTX). The decode thread calls ``decode_video``/``decode_audio``; the compositor calls
``take_picture``/``shows_video``: each side touches only its own state (see docs/architecture.md).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Literal

import av
import numpy as np

from .decode import AudioDecoder, VideoDecoder
from .errors import DecodeError
from .placement import AudioTrack
from .report import AudioCounts, ParticipantResult, VideoCounts
from .streams.assembler import EncodedFrame
from .streams.room import IDLE_NS, ParticipantReport
from .timeline import OutputClock, Presence, StreamTiming

__all__ = ["CONCEAL_S", "LOSS_REACH", "OnLoss", "Source", "Timed"]

logger = logging.getLogger(__name__)

OnLoss = Literal["freeze", "placeholder"]
NS = 1_000_000_000
#: Lost audio up to this long is filled by the decoder's concealment (Opus PLC), longer is silence.
CONCEAL_S = 0.12
#: A loss that starts within this many packets after the picture shown is what stopped it.
LOSS_REACH = 64

Timed = tuple[float, EncodedFrame]
"""An encoded frame with the session instant it belongs at."""


@dataclass(slots=True)
class _VideoTally:
    shown_placeholder: int = 0  # output frames showing the placeholder instead of a picture
    undecodable: int = 0  # frames of a stream no decoder takes


@dataclass(slots=True)
class _AudioTally:
    decoded: int = 0
    dropped: int = 0  # outside the recording (trimmed)
    concealed: int = 0  # losses filled by the decoder's concealment
    undecodable: int = 0  # frames of a stream no decoder takes (an unusual clock rate)


class Source:
    """One participant's queues, decoders, last picture and audio track."""

    def __init__(self, participant: ParticipantReport, threads: int = 1) -> None:
        self.id = participant.id
        self.name = participant.name
        self.presence = Presence.of(participant)
        self.threads = threads
        self.codecs = {
            ssrc: (s.codec, s.clock_rate) for s in participant.streams for ssrc in s.ssrcs
        }
        # video ssrc -> first (unwrapped) sequence numbers of its losses
        self.lost = {
            ssrc: sorted(g.first_seq for g in st.gaps)
            for s in participant.streams
            if s.kind == "video"
            for ssrc, st in s.stats.items()
            if st.gaps
        }
        self.skipped_for_keyframe = sum(
            st.frames_skipped_for_keyframe
            for s in participant.streams
            if s.kind == "video"
            for st in s.stats.values()
        )
        self.video: deque[Timed] = deque()
        self.audio: deque[Timed] = deque()
        self.video_decoders: dict[int, VideoDecoder] = {}
        self.audio_decoders: dict[int, AudioDecoder] = {}
        self.audio_next: dict[int, int] = {}  # ssrc -> the timestamp that continues its audio
        self.pcm: deque[tuple[float, np.ndarray]] = deque()  # decoded: (output sample, block)
        self.pictures: deque[tuple[float, av.VideoFrame, tuple[int, int]]] = deque()
        self.picture: av.VideoFrame | None = None
        self.picture_ns = -math.inf
        self.picture_key: tuple[int, int] | None = None  # (ssrc, its last unwrapped seq)
        self.track = AudioTrack()
        self.video_counts = _VideoTally()
        self.audio_counts = _AudioTally()

    # -- the decode thread ----------------------------------------------------------------------

    def decode_video(self, until: float) -> None:
        """Decode the video frames due by `until` (session ns) into the `pictures` queue."""
        while self.video and self.video[0][0] <= until:
            at, frame = self.video.popleft()
            decoder = self.video_decoders.get(frame.ssrc)
            if decoder is None:
                try:
                    decoder = VideoDecoder(self.codecs[frame.ssrc][0], threads=self.threads)
                except DecodeError as exc:
                    self.video_counts.undecodable += 1
                    logger.debug("%s: ssrc %#010x not decoded: %s", self.id, frame.ssrc, exc)
                    continue  # a stream no decoder takes costs that stream only
                self.video_decoders[frame.ssrc] = decoder
            pictures = decoder.decode(frame)
            if pictures:
                self.pictures.append((at, pictures[-1], (frame.ssrc, frame.last_seq)))

    def decode_audio(
        self, until: float, clock: OutputClock, timing: dict[int, StreamTiming], rate: int
    ) -> None:
        """Decode the audio frames due by `until` (session ns) into the `pcm` queue with the
        output sample each belongs at; conceal short losses where the audio belonged."""
        while self.audio and self.audio[0][0] <= until:
            at, frame = self.audio.popleft()
            out = clock.output_ns(at)
            if out is None:
                self.audio_counts.dropped += 1
                continue
            decoder = self.audio_decoders.get(frame.ssrc)
            if decoder is None:
                codec, clock_rate = self.codecs[frame.ssrc]
                try:
                    decoder = AudioDecoder(codec, clock_rate)
                except DecodeError as exc:
                    self.audio_counts.undecodable += 1
                    logger.debug("%s: ssrc %#010x not decoded: %s", self.id, frame.ssrc, exc)
                    continue
                self.audio_decoders[frame.ssrc] = decoder
            expected = self.audio_next.get(frame.ssrc)
            missing = 0 if expected is None else frame.timestamp - expected
            if 0 < missing <= decoder.clock_rate * CONCEAL_S:
                # a lost packet or two: the decoder's concealment, where the audio belonged
                assert expected is not None
                gap_out = clock.output_ns(timing[frame.ssrc].session_ns(expected))
                if gap_out is not None:
                    self.pcm.append((gap_out * rate / NS - decoder.delay, decoder.conceal(missing)))
                    self.audio_counts.concealed += 1
            samples = decoder.decode(frame)
            if len(samples):
                self.audio_counts.decoded += 1
                self.pcm.append((out * rate / NS - decoder.delay, samples))
                self.audio_next[frame.ssrc] = frame.timestamp + len(samples) // decoder.ratio

    def place_audio(self, until_sample: int) -> None:
        """Place the decoded audio that starts before until_sample on the track."""
        while self.pcm and self.pcm[0][0] < until_sample:
            ideal, samples = self.pcm.popleft()
            self.track.place(ideal, samples)

    # -- the compositor -------------------------------------------------------------------------

    def take_picture(self, until: float) -> None:
        """Show the latest decoded picture due by `until` (session ns)."""
        while self.pictures and self.pictures[0][0] <= until:
            self.picture_ns, self.picture, self.picture_key = self.pictures.popleft()

    def shows_video(self, s: float, period: float, on_loss: OnLoss) -> bool:
        """Whether the tile shows the picture at session instant s (else the placeholder): not
        with the camera off or the stream stalled, nor after a loss with on_loss placeholder."""
        if self.picture is None or self.presence.camera_off(s):
            return False
        if s - self.picture_ns > IDLE_NS["video"]:
            return False
        return not (
            on_loss == "placeholder"
            and s - self.picture_ns > 2 * period
            and self.picture_key is not None
            and self._lost_after(*self.picture_key)
        )

    def _lost_after(self, ssrc: int, last_seq: int) -> bool:
        """Whether the stream lost packets right after the picture ending at last_seq."""
        starts = self.lost.get(ssrc)
        if not starts:
            return False
        i = bisect.bisect_right(starts, last_seq)
        return i < len(starts) and starts[i] <= last_seq + LOSS_REACH

    # -- the report -----------------------------------------------------------------------------

    def result(self, clock: OutputClock) -> ParticipantResult:
        """This participant in the report: presence (seconds from the recording's start) and
        what their video and audio cost."""
        return ParticipantResult(
            id=self.id,
            name=self.name,
            presence_s=[(clock.seconds(a), clock.seconds(b)) for a, b in self.presence.spans],
            video=self.video_result(),
            audio=self.audio_result(),
        )

    def video_result(self) -> VideoCounts:
        """The video counts with the decoders' own (pictures out, errors, frames skipped to a
        keyframe) and the frames the ingest never handed over (waiting for a keyframe)."""
        decoders = list(self.video_decoders.values())
        return VideoCounts(
            decoded=sum(d.stats.frames_out for d in decoders),
            decode_errors=sum(d.stats.errors for d in decoders),
            dropped=sum(d.stats.skipped for d in decoders) + self.skipped_for_keyframe,
            shown_placeholder=self.video_counts.shown_placeholder,
            undecodable=self.video_counts.undecodable,
        )

    def audio_result(self) -> AudioCounts:
        """The audio counts with the decoders' errors and the track's placement counts."""
        errors = sum(d.stats.errors for d in self.audio_decoders.values())
        counts = asdict(self.audio_counts) | asdict(self.track.stats)
        return AudioCounts(**counts, decode_errors=errors)
