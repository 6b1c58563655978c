"""Turn one SSRC's RTP packets, in arrival order, into encoded frames in media order.

Per stream: 16-bit sequence numbers and 32-bit timestamps are unwrapped to integers that only
grow; packets are put back in sequence order within a window (arrival time and packet count);
duplicates (retransmissions of what arrived, RTX repairs) are dropped; packets of one RTP
timestamp are gathered into a frame and depayloaded. A frame with a missing packet is never
emitted: a video stream then waits for its next keyframe (no grey smears in the recording), an
audio stream just continues (the gap is reported for the mixer to fill with silence).

It is offline: nothing is requested from the sender, so a lost keyframe costs everything up to
the next one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import CaptureError
from .codecs import FrameInfo

__all__ = [
    "EncodedFrame",
    "Gap",
    "PayloadCodec",
    "SequenceUnwrapper",
    "StreamAssembler",
    "StreamStats",
    "TimestampUnwrapper",
]


class PayloadCodec(Protocol):
    """How a codec's RTP payloads become frames (see skymix.streams.codecs)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def clock_rate(self) -> int: ...

    def starts_frame(self, payload: bytes) -> bool: ...

    def depayload(self, payload: bytes) -> bytes: ...

    def frame_info(self, frame: bytes, first_payload: bytes) -> FrameInfo: ...


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One decodable frame (a video picture, an audio packet) of one stream.

    timestamp: the unwrapped RTP timestamp (media clock units, grows without wrapping).
    first_arrival_ns/last_arrival_ns: relay arrival of its first and last packet.
    """

    ssrc: int
    timestamp: int
    first_arrival_ns: int
    last_arrival_ns: int
    data: bytes
    keyframe: bool
    width: int | None
    height: int | None
    first_seq: int
    last_seq: int
    audio_level: int | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """Media that did not arrive: packets first_seq..last_seq (unwrapped) are missing."""

    ssrc: int
    first_seq: int
    last_seq: int
    after_timestamp: int | None
    arrival_ns: int

    @property
    def packets(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(slots=True)
class StreamStats:
    """Counters of one stream, for `skymix inspect` and the mix report."""

    packets: int = 0
    duplicates: int = 0
    reordered: int = 0
    lost: int = 0
    late: int = 0
    padding_only: int = 0
    malformed: int = 0
    frames: int = 0
    keyframes: int = 0
    incomplete_frames: int = 0
    frames_skipped_for_keyframe: int = 0
    keyframe_waits: int = 0
    resolutions: list[tuple[int, int, int]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    problems: list[CaptureError] = field(default_factory=list)

    @property
    def loss_percent(self) -> float:
        expected = self.packets - self.duplicates + self.lost
        return 100.0 * self.lost / expected if expected else 0.0


class SequenceUnwrapper:
    """16-bit RTP sequence numbers to integers that keep counting across wraps (RFC 3550 A.1)."""

    def __init__(self) -> None:
        self._last: int | None = None

    def __call__(self, seq: int) -> int:
        if self._last is None:
            self._last = seq
            return seq
        delta = (seq - self._last) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        value = self._last + delta
        if delta > 0:
            self._last = value
        return value


class TimestampUnwrapper:
    """32-bit RTP timestamps to integers, each taken as the value nearest the last one seen."""

    def __init__(self) -> None:
        self._last: int | None = None

    def __call__(self, ts: int) -> int:
        if self._last is None:
            self._last = ts
            return ts
        delta = (ts - self._last) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        value = self._last + delta
        if delta > 0:
            self._last = value
        return value


@dataclass(slots=True)
class _Packet:
    seq: int
    timestamp: int
    arrival_ns: int
    marker: bool
    payload: bytes
    audio_level: int | None


class StreamAssembler:
    """Reorders, deduplicates and assembles one SSRC's packets into EncodedFrames.

    push() takes packets in arrival order and returns the frames that became final; flush()
    returns the rest at the end. A packet is held until the ones before it arrived, or until it
    is `window_ns` older than the newest arrival or `window_packets` are waiting: then the missing
    ones are declared lost (a later arrival of them is counted as late and dropped).
    """

    def __init__(
        self,
        codec: PayloadCodec,
        ssrc: int,
        *,
        window_ns: int = 500_000_000,
        window_packets: int = 512,
        file: str | None = None,
    ) -> None:
        self.codec = codec
        self.ssrc = ssrc
        self.stats = StreamStats()
        self._window_ns = window_ns
        self._window_packets = window_packets
        self._file = file
        self._seq = SequenceUnwrapper()
        self._ts = TimestampUnwrapper()
        self._held: dict[int, _Packet] = {}
        self._next: int | None = None  # next sequence number to release
        self._first_arrival: int | None = None
        self._newest_arrival = 0
        self._highest = -1
        self._frame: list[_Packet] = []
        self._lost: deque[tuple[int, int]] = deque(maxlen=256)
        self._need_keyframe = codec.kind == "video"
        self._last_timestamp: int | None = None
        self._size: tuple[int, int] | None = None

    def push(self, arrival_ns: int, seq: int, timestamp: int, marker: bool,
             payload: bytes, audio_level: int | None = None) -> list[EncodedFrame]:
        """Add one packet (its RTP header fields and payload, padding removed).

        audio_level: the RFC 6464 level of the packet in -dBov (0 loudest, 127 silence), if the
        sender sent one; it is carried to the frame.
        """
        stats = self.stats
        stats.packets += 1
        useq = self._seq(seq)
        uts = self._ts(timestamp)
        if self._next is not None and useq < self._next:
            if any(first <= useq <= last for first, last in self._lost):
                stats.late += 1
            else:
                stats.duplicates += 1
            return []
        if useq in self._held:
            stats.duplicates += 1
            return []
        if useq < self._highest:
            stats.reordered += 1
        self._highest = max(self._highest, useq)
        self._held[useq] = _Packet(useq, uts, arrival_ns, marker, payload, audio_level)
        self._newest_arrival = max(self._newest_arrival, arrival_ns)
        if self._first_arrival is None:
            self._first_arrival = arrival_ns
        return list(self._release(final=False))

    def flush(self) -> list[EncodedFrame]:
        """Everything still held, as if no more packets will come.

        A video frame still open at the end has not seen its marker: the capture may have stopped
        in the middle of it, so it is dropped.
        """
        frames = list(self._release(final=True))
        frames.extend(self._close_frame(whole=self.codec.kind == "audio"))
        return frames

    def _release(self, final: bool) -> Iterator[EncodedFrame]:
        """Release held packets in sequence order; declare a hole lost once it is stale.

        Nothing is released until the stream's first packets have had their window to arrive:
        the first packet to arrive need not be the first one sent.
        """
        if self._next is None:
            assert self._first_arrival is not None
            started = (final or len(self._held) > self._window_packets
                       or self._newest_arrival - self._first_arrival > self._window_ns)
            if not started:
                return
            self._next = min(self._held)
        while self._held:
            packet = self._held.pop(self._next, None)
            if packet is not None:
                self._next += 1
                yield from self._add(packet)
                continue
            oldest = min(self._held)
            stale = self._newest_arrival - self._held[oldest].arrival_ns > self._window_ns
            if not (final or stale or len(self._held) > self._window_packets):
                return
            self._lose(self._next, oldest - 1, self._held[oldest].arrival_ns)
            yield from self._close_frame(whole=False)
            self._next = oldest

    def _lose(self, first: int, last: int, arrival_ns: int) -> None:
        self.stats.lost += last - first + 1
        self.stats.gaps.append(Gap(self.ssrc, first, last, self._last_timestamp, arrival_ns))
        self._lost.append((first, last))
        if self.codec.kind == "video":
            self._wait_for_keyframe()

    def _wait_for_keyframe(self) -> None:
        if not self._need_keyframe:
            self.stats.keyframe_waits += 1
        self._need_keyframe = True

    def _add(self, packet: _Packet) -> Iterator[EncodedFrame]:
        if not packet.payload:
            self.stats.padding_only += 1
            return
        if self._frame and packet.timestamp != self._frame[0].timestamp:
            # a new timestamp with nothing lost in between: the open frame had all its packets
            yield from self._close_frame(whole=True)
        self._frame.append(packet)
        if packet.marker or self.codec.kind == "audio":
            yield from self._close_frame(whole=True)

    def _close_frame(self, whole: bool) -> Iterator[EncodedFrame]:
        """Emit the gathered packets as a frame if they are all of one."""
        packets, self._frame = self._frame, []
        if not packets:
            return
        first = packets[0]
        if not (whole and self._starts(first)):
            self.stats.incomplete_frames += 1
            if self.codec.kind == "video":
                self._wait_for_keyframe()
            return
        try:
            data = b"".join([self.codec.depayload(p.payload) for p in packets])
            info = self.codec.frame_info(data, first.payload)
        except CaptureError as exc:
            self.stats.malformed += 1
            self.stats.problems.append(
                CaptureError(str(exc), file=self._file, ssrc=self.ssrc, seq=first.seq & 0xFFFF)
            )
            if self.codec.kind == "video":
                self._wait_for_keyframe()
            return
        if self._need_keyframe and not info.keyframe:
            self.stats.frames_skipped_for_keyframe += 1
            return
        self._need_keyframe = False
        self._last_timestamp = first.timestamp
        if info.width is not None and info.height is not None:
            size = (info.width, info.height)
            if size != self._size:
                self._size = size
                self.stats.resolutions.append((first.timestamp, info.width, info.height))
        self.stats.frames += 1
        self.stats.keyframes += info.keyframe
        yield EncodedFrame(
            ssrc=self.ssrc,
            timestamp=first.timestamp,
            first_arrival_ns=min(p.arrival_ns for p in packets),
            last_arrival_ns=max(p.arrival_ns for p in packets),
            data=data,
            keyframe=info.keyframe,
            width=self._size[0] if self._size else None,
            height=self._size[1] if self._size else None,
            first_seq=first.seq,
            last_seq=packets[-1].seq,
            audio_level=first.audio_level,
        )

    def _starts(self, packet: _Packet) -> bool:
        try:
            return self.codec.starts_frame(packet.payload)
        except CaptureError:
            return False
