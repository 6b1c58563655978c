"""Turn one SSRC's RTP packets, in arrival order, into encoded frames in media order.

Per stream: 16-bit sequence numbers and 32-bit timestamps are unwrapped to integers that only
grow; packets are put back in sequence order within a window (arrival time and packet count);
duplicates (retransmissions of what arrived, RTX repairs) are dropped; packets of one RTP
timestamp are gathered into a frame and depayloaded. A frame with a missing packet is never
emitted: a video stream then waits for its next keyframe (no grey smears in the recording), an
audio stream just continues (the gap is reported for the mixer to fill with silence).

It is offline: nothing is requested from the sender, so a lost keyframe costs everything up to
the next one.

Packets come in batches (numpy columns over one buffer, see push_batch): ordering, duplicate and
loss decisions are array operations and only frames are handled one by one in Python, which is
what lets a room's capture be read at hundreds of thousands of packets per second. push() is a
batch of one, so there is one set of rules.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

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


class EncodedFrame(NamedTuple):
    """One decodable frame (a video picture, an audio packet) of one stream.

    timestamp: the unwrapped RTP timestamp (media clock units, grows without wrapping).
    first_arrival_ns/last_arrival_ns: relay arrival of its first and last packet.
    A named tuple, not a frozen dataclass: most packets are a frame of their own, and building
    one is seven times cheaper (0.2 against 1.5 µs), which is most of ingest's time budget.
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


Ints = npt.NDArray[np.int64]
#: Builds an EncodedFrame from a tuple of its fields without the generated __new__'s call.
_new_frame = tuple.__new__


class _Unwrapper:
    """Counts on across wraps of a BITS-bit counter: each value is taken as the integer nearest
    the highest one seen so far (RFC 3550 A.1)."""

    BITS = 32

    def __init__(self) -> None:
        self._last: int | None = None

    def __call__(self, value: int) -> int:
        if self._last is None:
            self._last = value
            return value
        modulus = 1 << self.BITS
        delta = (value - self._last) & (modulus - 1)
        if delta >= modulus >> 1:
            delta -= modulus
        unwrapped = self._last + delta
        if delta > 0:
            self._last = unwrapped
        return unwrapped

    def batch(self, values: npt.NDArray[np.integer]) -> Ints:
        """The same as calling self on each value in order, as one array operation.

        Exact whenever the batch stays within a quarter of the counter's range of the highest
        value before it (always, for a second of real RTP); otherwise it falls back to the loop.
        """
        raw = np.asarray(values, np.int64)
        if not len(raw):
            return raw
        modulus = 1 << self.BITS
        ref = int(raw[0]) if self._last is None else self._last
        delta = (raw - ref) % modulus
        delta[delta >= modulus >> 1] -= modulus
        quarter = modulus >> 2
        if int(delta.min()) > -quarter and int(delta.max()) < quarter:
            self._last = ref + max(0, int(delta.max()))
            return delta + ref
        return np.array([self(int(v)) for v in raw], np.int64)


class SequenceUnwrapper(_Unwrapper):
    """16-bit RTP sequence numbers to integers that keep counting across wraps (RFC 3550 A.1)."""

    BITS = 16


class TimestampUnwrapper(_Unwrapper):
    """32-bit RTP timestamps to integers, each taken as the value nearest the last one seen."""

    BITS = 32


@dataclass(slots=True)
class _Packet:
    seq: int
    timestamp: int
    arrival_ns: int
    marker: bool
    payload: bytes
    audio_level: int | None


@dataclass(slots=True)
class _Rows:
    """Packets as columns; payload i is ``old[i]`` for the first len(old) rows, else a slice of
    buf between start and end."""

    seq: Ints
    timestamp: Ints
    arrival: Ints
    marker: npt.NDArray[np.bool_]
    level: npt.NDArray[np.int16]
    old: list[bytes]
    buf: bytes
    start: Ints
    end: Ints

    def payload(self, i: int) -> bytes:
        n = len(self.old)
        if i < n:
            return self.old[i]
        return self.buf[self.start[i - n] : self.end[i - n]]

    def take(self, index: npt.NDArray[np.intp]) -> _Rows:
        """The rows at index, in that order; payloads of the buffer stay where they are."""
        n = len(self.old)
        old = [self.payload(int(i)) for i in index[index < n]] if n else []
        if n and len(old) and not np.all(index[: len(old)] < n):
            # old rows are spread among new ones: give every taken row its own bytes
            old = [self.payload(int(i)) for i in index]
            empty = np.zeros(0, np.int64)
            return _Rows(
                self.seq[index],
                self.timestamp[index],
                self.arrival[index],
                self.marker[index],
                self.level[index],
                old,
                b"",
                empty,
                empty,
            )
        new = index[len(old) :] - n
        return _Rows(
            self.seq[index],
            self.timestamp[index],
            self.arrival[index],
            self.marker[index],
            self.level[index],
            old,
            self.buf,
            self.start[new],
            self.end[new],
        )

    def packets(self) -> list[_Packet]:
        return [
            _Packet(
                int(self.seq[i]),
                int(self.timestamp[i]),
                int(self.arrival[i]),
                bool(self.marker[i]),
                self.payload(i),
                None if self.level[i] < 0 else int(self.level[i]),
            )
            for i in range(len(self.seq))
        ]


def _rows_of(packets: list[_Packet]) -> _Rows:
    empty = np.zeros(0, np.int64)
    return _Rows(
        np.array([p.seq for p in packets], np.int64),
        np.array([p.timestamp for p in packets], np.int64),
        np.array([p.arrival_ns for p in packets], np.int64),
        np.array([p.marker for p in packets], np.bool_),
        np.array([-1 if p.audio_level is None else p.audio_level for p in packets], np.int16),
        [p.payload for p in packets],
        b"",
        empty,
        empty,
    )


def _concat(a: _Rows, b: _Rows) -> _Rows:
    """a's rows then b's; a must hold its payloads itself (no buffer rows)."""
    assert not len(a.start)
    return _Rows(
        np.concatenate([a.seq, b.seq]),
        np.concatenate([a.timestamp, b.timestamp]),
        np.concatenate([a.arrival, b.arrival]),
        np.concatenate([a.marker, b.marker]),
        np.concatenate([a.level, b.level]),
        a.old + b.old,
        b.buf,
        b.start,
        b.end,
    )


class StreamAssembler:
    """Reorders, deduplicates and assembles one SSRC's packets into EncodedFrames.

    push()/push_batch() take packets in arrival order and return the frames that became final;
    flush() returns the rest at the end. A packet is held until the ones before it arrived. The
    hole below a held packet is declared lost once the newest arrival is `window_ns` later than
    that packet's, or more than `window_packets` are waiting; a packet of a hole that arrives
    after that is counted as late and dropped.
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
        self._audio = codec.kind == "audio"
        self._seq = SequenceUnwrapper()
        self._ts = TimestampUnwrapper()
        self._held: list[_Packet] = []  # in arrival order
        self._held_seqs: set[int] = set()
        self._next: int | None = None  # next sequence number to release
        self._first_arrival: int | None = None
        self._newest_arrival = 0
        self._highest = -1
        self._frame: list[_Packet] = []
        self._lost: deque[tuple[int, int]] = deque(maxlen=256)
        self._need_keyframe = codec.kind == "video"
        self._last_timestamp: int | None = None
        self._size: tuple[int, int] | None = None

    def push(
        self,
        arrival_ns: int,
        seq: int,
        timestamp: int,
        marker: bool,
        payload: bytes,
        audio_level: int | None = None,
    ) -> list[EncodedFrame]:
        """Add one packet (its RTP header fields and payload, padding removed).

        audio_level: the RFC 6464 level of the packet in -dBov (0 loudest, 127 silence), if the
        sender sent one; it is carried to the frame.
        """
        one = np.zeros(1, np.int64)
        return self.push_batch(
            one + arrival_ns,
            one + seq,
            one + timestamp,
            np.array([marker], np.bool_),
            payload,
            one,
            one + len(payload),
            None if audio_level is None else np.array([audio_level], np.int16),
        )

    def push_batch(
        self,
        arrival_ns: Ints,
        seq: npt.NDArray[np.integer],
        timestamp: npt.NDArray[np.integer],
        marker: npt.NDArray[np.bool_],
        buf: bytes,
        start: Ints,
        end: Ints,
        audio_level: npt.NDArray[np.int16] | None = None,
    ) -> list[EncodedFrame]:
        """Add packets in arrival order: header fields as arrays, payload i = buf[start[i]:end[i]]
        (padding removed); audio_level -1 where a packet has none."""
        n = len(arrival_ns)
        if not n:
            return []
        self.stats.packets += n
        level = (
            np.full(n, -1, np.int16) if audio_level is None else np.asarray(audio_level, np.int16)
        )
        rows = _Rows(
            self._seq.batch(seq),
            self._ts.batch(timestamp),
            np.asarray(arrival_ns, np.int64),
            np.asarray(marker, np.bool_),
            level,
            [],
            buf,
            start,
            end,
        )
        if self._first_arrival is None:
            self._first_arrival = int(rows.arrival[0])
        frames: list[EncodedFrame] = []
        if self._next is None:
            rows = self._start(rows, frames)
        if len(rows.seq):
            self._admit(rows, frames)
        return frames

    def flush(self) -> list[EncodedFrame]:
        """Everything still held, as if no more packets will come.

        A video frame still open at the end has not seen its marker: the capture may have stopped
        in the middle of it, so it is dropped.
        """
        frames: list[EncodedFrame] = []
        if self._held:
            if self._next is None:
                self._next = min(self._held_seqs)
            self._release(_rows_of([]), frames, final=True)
        self._close(self._frame, whole=self._audio, frames=frames)
        self._frame = []
        return frames

    # -- ordering ---------------------------------------------------------------------------

    def _start(self, rows: _Rows, frames: list[EncodedFrame]) -> _Rows:
        """Hold a stream's first packets until their window has passed (the first to arrive need
        not be the first sent), then start releasing at the lowest; the rows left over."""
        assert self._first_arrival is not None
        fresh = self._first_occurrences(rows.seq)
        held = len(self._held) + np.cumsum(fresh)
        newest = np.maximum.accumulate(np.where(fresh, rows.arrival, self._newest_arrival))
        ready = (held > self._window_packets) | (newest - self._first_arrival > self._window_ns)
        cut = int(np.argmax(ready)) + 1 if ready.any() else len(rows.seq)
        keep = np.flatnonzero(fresh[:cut])
        self.stats.duplicates += cut - len(keep)
        self._hold(rows.take(keep))
        self._newest_arrival = max(self._newest_arrival, int(newest[cut - 1]))
        if cut == len(rows.seq) and not ready.any():
            return rows.take(np.zeros(0, np.intp))
        self._next = min(self._held_seqs)
        self._release(_rows_of([]), frames, final=False)
        return rows.take(np.arange(cut, len(rows.seq)))

    def _first_occurrences(self, seq: Ints) -> npt.NDArray[np.bool_]:
        """Rows that are neither held already nor a repeat of an earlier row of the batch."""
        if len(seq) < 2 or np.all(seq[1:] > seq[:-1]):
            fresh = np.ones(len(seq), np.bool_)
        else:
            _, first = np.unique(seq, return_index=True)
            fresh = np.zeros(len(seq), np.bool_)
            fresh[first] = True
        if self._held_seqs:
            fresh &= ~np.isin(seq, np.fromiter(self._held_seqs, np.int64, len(self._held_seqs)))
        return fresh

    def _hold(self, rows: _Rows) -> None:
        packets = rows.packets()
        self._held.extend(packets)
        self._held_seqs.update(p.seq for p in packets)
        if len(rows.seq):
            self._highest = max(self._highest, int(rows.seq.max()))

    def _admit(self, rows: _Rows, frames: list[EncodedFrame]) -> None:
        """Drop duplicates and late packets, count reordering, then release what is in order."""
        assert self._next is not None
        stats = self.stats
        seq = rows.seq
        below = seq < self._next
        for useq in seq[below].tolist():
            if any(first <= useq <= last for first, last in self._lost):
                stats.late += 1
            else:
                stats.duplicates += 1
        keep = ~below & self._first_occurrences(seq)
        repeats = ~below & ~keep
        stats.duplicates += int(repeats.sum())
        index = np.flatnonzero(keep)
        kept = seq[index]
        before = np.maximum.accumulate(np.concatenate([[self._highest], kept]))[:-1]
        out_of_order = np.flatnonzero(kept < before)
        if len(out_of_order):
            late = self._late(rows, index, out_of_order)
            stats.reordered += len(out_of_order) - len(late)
            stats.late += len(late)
            if late:
                # later copies of a late packet are late too, not duplicates of a released one
                again = int(np.isin(seq[repeats], kept[late]).sum())
                stats.late += again
                stats.duplicates -= again
                index = np.delete(index, late)
        if len(index):  # what was dropped does not move the clock, as one by one
            self._highest = max(self._highest, int(seq[index].max()))
            self._newest_arrival = max(self._newest_arrival, int(rows.arrival[index].max()))
        self._release(rows.take(index), frames, final=False)

    def _late(
        self, rows: _Rows, index: npt.NDArray[np.intp], out_of_order: npt.NDArray[np.intp]
    ) -> list[int]:
        """Which out-of-order rows (positions in index) came after the hole they fill was
        declared lost: later than the window after the nearest packet above them, or with more
        than window_packets waiting above them."""
        held_seq = np.array([p.seq for p in self._held], np.int64)
        held_arrival = np.array([p.arrival_ns for p in self._held], np.int64)
        seq = np.concatenate([held_seq, rows.seq[index]])
        arrival = np.concatenate([held_arrival, rows.arrival[index]])
        alive = np.ones(len(seq), np.bool_)
        late = []
        held = len(held_seq)
        for k in out_of_order.tolist():
            i = held + k
            above = alive[:i] & (seq[:i] > seq[i])
            if not above.any():
                continue
            nearest = int(np.argmin(np.where(above, seq[:i], np.iinfo(np.int64).max)))
            newer = arrival[held:i][alive[held:i]]  # a late row does not move the clock
            newest = max(self._newest_arrival, int(newer.max()) if len(newer) else 0)
            if (
                newest - int(arrival[nearest]) > self._window_ns
                or int(above.sum()) > self._window_packets
            ):
                late.append(k)
                alive[i] = False
        return late

    def _release(self, rows: _Rows, frames: list[EncodedFrame], final: bool) -> None:
        """Release held and new packets in sequence order up to the first hole that may still
        fill; declare the holes before it lost; keep the rest held."""
        assert self._next is not None
        pool = _concat(_rows_of(self._held), rows) if self._held else rows
        if len(pool.seq) > 1 and not np.all(pool.seq[1:] > pool.seq[:-1]):
            order = np.argsort(pool.seq, kind="stable")
            seq = pool.seq[order]
            arrival = pool.arrival[order]
        else:
            order = np.arange(len(pool.seq))
            seq, arrival = pool.seq, pool.arrival
        expected = np.concatenate([[self._next], seq[:-1] + 1])
        holes = np.flatnonzero(seq != expected)
        stop = len(seq)
        lost: list[tuple[int, int, int, int]] = []  # (position, first, last, arrival)
        for m in holes.tolist():
            waiting = len(seq) - m
            if not (
                final
                or self._newest_arrival - int(arrival[m]) > self._window_ns
                or waiting > self._window_packets
            ):
                stop = m
                break
            lost.append((m, int(expected[m]), int(seq[m]) - 1, int(arrival[m])))
        self._held = pool.take(order[stop:]).packets() if stop < len(seq) else []
        self._held_seqs = {p.seq for p in self._held}
        if stop:
            self._next = int(seq[stop - 1]) + 1
            in_place = stop == len(seq) and not self._held_sorted(order)
            self._assemble(pool if in_place else pool.take(order[:stop]), lost, frames)

    @staticmethod
    def _held_sorted(order: npt.NDArray[np.intp]) -> bool:
        """Whether the release order moves any row (the pool was not in sequence order)."""
        return (
            bool(len(order))
            and int(order[-1]) != len(order) - 1
            or bool(len(order) > 1 and np.any(order[1:] < order[:-1]))
        )

    # -- frames -----------------------------------------------------------------------------

    def _assemble(
        self, rows: _Rows, lost: list[tuple[int, int, int, int]], frames: list[EncodedFrame]
    ) -> None:
        """Cut released packets (in sequence order, after the open frame) into frames.

        A frame ends at its marker (video), at every packet (audio), before a packet of another
        timestamp, and at a hole (then it is incomplete). Padding-only packets take a sequence
        number and nothing else.
        """
        opened = len(self._frame)
        if opened:
            rows = _concat(_rows_of(self._frame), rows)
            lost = [(m + opened, first, last, at) for m, first, last, at in lost]
            self._frame = []
        lengths = np.array([len(p) for p in rows.old], np.int64)
        if len(rows.start):
            lengths = np.concatenate([lengths, rows.end - rows.start])
        media = np.flatnonzero(lengths > 0)
        self.stats.padding_only += len(lengths) - len(media)
        count = len(media)
        # the packet (media index) each hole comes before; count = after the last packet
        hole_at = np.searchsorted(media, np.array([m for m, *_ in lost], np.int64))
        payloads = _Payloads(self.codec, rows, media)
        if self._audio and payloads.cut:
            self._audio_frames(
                payloads,
                hole_at.tolist(),
                lost,
                rows.seq[media].tolist(),
                rows.timestamp[media].tolist(),
                rows.level[media].tolist(),
                rows.arrival[media].tolist(),
                frames,
            )
            return
        starts = np.zeros(count, np.bool_)
        whole = np.zeros(count, np.bool_)  # whole[k]: the frame ending at packet k is whole
        if count:
            ts = rows.timestamp[media]
            marker = rows.marker[media]
            starts[0] = True
            if self._audio:
                starts[:] = True
                whole[:] = True
            else:
                new_ts = ts[1:] != ts[:-1]
                starts[1:] = marker[:-1] | new_ts
                whole[:-1] = marker[:-1] | new_ts
                whole[-1] = marker[-1]
                hole_before = np.zeros(count + 1, np.bool_)
                hole_before[hole_at] = True
                starts |= hole_before[:count]
                # a hole right after a frame that its marker did not close leaves it incomplete
                whole &= ~(hole_before[1:] & ~marker)
        first = np.flatnonzero(starts)
        last = np.concatenate([first[1:], [count]]) - 1
        arrival = rows.arrival[media]
        first_arrival = np.minimum.reduceat(arrival, first).tolist() if count else []
        last_arrival = np.maximum.reduceat(arrival, first).tolist() if count else []
        open_end = (
            bool(count)
            and not self._audio
            and not whole[-1]
            and not (len(hole_at) and int(hole_at[-1]) == count)
        )
        seq = rows.seq[media].tolist()
        timestamps = rows.timestamp[media].tolist() if count else []
        levels = rows.level[media].tolist() if count else []
        whole_list = whole.tolist()
        holes = iter(zip(hole_at.tolist(), lost))
        pending = next(holes, None)
        frames_cut = len(first)
        quick = payloads.cut
        data = payloads.data if quick else []
        simple = payloads.simple
        starts_list = payloads.starts_list
        stats = self.stats
        ssrc = self.ssrc
        width, height = self._size if self._size else (None, None)
        for k, (a, b) in enumerate(zip(first.tolist(), last.tolist())):
            while pending is not None and pending[0] <= a:
                self._lose(*pending[1][1:])
                pending = next(holes, None)
            if open_end and k == frames_cut - 1:
                self._frame = [
                    _Packet(
                        seq[i],
                        timestamps[i],
                        int(arrival[i]),
                        bool(rows.marker[media[i]]),
                        payloads.payload(i),
                        None if levels[i] < 0 else levels[i],
                    )
                    for i in range(a, b + 1)
                ]
                break
            if quick and whole_list[b] and simple[a] and starts_list[a]:
                # a delta frame cut by the batch layout: the common case, without _emit's checks
                pieces = data[a] if a == b else data[a : b + 1]
                if pieces is not None and (a == b or None not in pieces):
                    if self._need_keyframe:
                        stats.frames_skipped_for_keyframe += 1
                        continue
                    stats.frames += 1
                    self._last_timestamp = timestamps[a]
                    frames.append(
                        _new_frame(
                            EncodedFrame,
                            (
                                ssrc,
                                timestamps[a],
                                first_arrival[k],
                                last_arrival[k],
                                pieces if a == b else b"".join(pieces),  # type: ignore[arg-type]
                                False,
                                width,
                                height,
                                seq[a],
                                seq[b],
                                None if levels[a] < 0 else levels[a],
                            ),
                        )
                    )
                    continue
            self._emit(
                payloads,
                a,
                b,
                whole_list[b],
                seq,
                timestamps[a],
                levels[a],
                first_arrival[k],
                last_arrival[k],
                frames,
            )
            width, height = self._size if self._size else (None, None)
        while pending is not None:
            self._lose(*pending[1][1:])
            pending = next(holes, None)

    def _audio_frames(
        self,
        payloads: _Payloads,
        hole_at: list[int],
        lost: list[tuple[int, int, int, int]],
        seq: list[int],
        timestamps: list[int],
        levels: list[int],
        arrival: list[int],
        frames: list[EncodedFrame],
    ) -> None:
        """Audio of a codec with a batch layout: every packet is a frame; the common ones (a
        valid one-packet frame) are built without the per-frame checks of _emit."""
        data = payloads.data
        simple = payloads.simple
        stats = self.stats
        level_of = (
            [None] * len(levels)
            if max(levels, default=-1) < 0
            else [None if level < 0 else level for level in levels]
        )
        begin = 0
        for end, hole in [*zip(hole_at, lost), (len(seq), None)]:
            if end > begin and all(simple[begin:end]) and None not in data[begin:end]:
                count = end - begin
                part = slice(begin, end)
                frames.extend(
                    [
                        _new_frame(EncodedFrame, fields)
                        for fields in zip(
                            repeat(self.ssrc, count),
                            timestamps[part],
                            arrival[part],
                            arrival[part],
                            data[part],
                            repeat(True),
                            repeat(None),
                            repeat(None),
                            seq[part],
                            seq[part],
                            level_of[part],
                        )
                    ]
                )
                stats.frames += count
                stats.keyframes += count
                self._last_timestamp = timestamps[end - 1]
            else:
                for i in range(begin, end):
                    self._emit(
                        payloads,
                        i,
                        i,
                        True,
                        seq,
                        timestamps[i],
                        levels[i],
                        arrival[i],
                        arrival[i],
                        frames,
                    )
            if hole is not None:
                self._lose(*hole[1:])
            begin = end

    def _lose(self, first: int, last: int, arrival_ns: int) -> None:
        self.stats.lost += last - first + 1
        self.stats.gaps.append(Gap(self.ssrc, first, last, self._last_timestamp, arrival_ns))
        self._lost.append((first, last))
        if not self._audio:
            self._wait_for_keyframe()

    def _wait_for_keyframe(self) -> None:
        if not self._need_keyframe:
            self.stats.keyframe_waits += 1
        self._need_keyframe = True

    def _close(self, packets: list[_Packet], whole: bool, frames: list[EncodedFrame]) -> None:
        """Emit held-over packets (the open frame at the end) as a frame if they are one."""
        if packets:
            rows = _rows_of(packets)
            payloads = _Payloads(self.codec, rows, np.arange(len(packets)))
            self._emit(
                payloads,
                0,
                len(packets) - 1,
                whole,
                [p.seq for p in packets],
                packets[0].timestamp,
                int(rows.level[0]),
                int(rows.arrival.min()),
                int(rows.arrival.max()),
                frames,
            )

    def _emit(
        self,
        payloads: _Payloads,
        a: int,
        b: int,
        whole: bool,
        seq: list[int],
        timestamp: int,
        level: int,
        first_arrival: int,
        last_arrival: int,
        frames: list[EncodedFrame],
    ) -> None:
        """Emit packets a..b (media indices, in order) as a frame if they are all of one."""
        stats = self.stats
        if not (whole and payloads.starts(a)):
            stats.incomplete_frames += 1
            if not self._audio:
                self._wait_for_keyframe()
            return
        try:
            data, info = payloads.frame(a, b)
        except CaptureError as exc:
            stats.malformed += 1
            stats.problems.append(
                CaptureError(str(exc), file=self._file, ssrc=self.ssrc, seq=seq[a] & 0xFFFF)
            )
            if not self._audio:
                self._wait_for_keyframe()
            return
        if self._need_keyframe and not info.keyframe:
            stats.frames_skipped_for_keyframe += 1
            return
        self._need_keyframe = False
        self._last_timestamp = timestamp
        if info.width is not None and info.height is not None:
            size = (info.width, info.height)
            if size != self._size:
                self._size = size
                stats.resolutions.append((timestamp, info.width, info.height))
        stats.frames += 1
        stats.keyframes += info.keyframe
        shown = self._size
        frames.append(
            EncodedFrame(
                self.ssrc,
                timestamp,
                first_arrival,
                last_arrival,
                data,
                info.keyframe,
                shown[0] if shown else None,
                shown[1] if shown else None,
                seq[a],
                seq[b],
                None if level < 0 else level,
            )
        )


class _Payloads:
    """The payloads of released packets (media index order) and their frame data: cut by array
    operations where the codec has a batch layout (rtpbatch.payload_layout), else by the
    codec's per-packet depayload."""

    __slots__ = ("codec", "_old", "_buf", "_start", "_end", "_data", "_starts", "_simple", "_info")

    @property
    def cut(self) -> bool:
        """The codec has a batch layout: data and simple are known."""
        return self._data is not None

    @property
    def data(self) -> list[bytes | None]:
        assert self._data is not None
        return self._data

    @property
    def simple(self) -> list[bool]:
        return self._simple

    @property
    def starts_list(self) -> list[bool]:
        return self._starts

    def __init__(self, codec: PayloadCodec, rows: _Rows, media: npt.NDArray[np.intp]) -> None:
        from .rtpbatch import payload_layout  # rtpbatch builds on this module

        self.codec = codec
        n_old = len(rows.old)
        self._old = [rows.old[i] for i in media[media < n_old].tolist()]
        new = media[media >= n_old] - n_old
        self._buf = rows.buf
        self._start = rows.start[new].tolist()
        self._end = rows.end[new].tolist()
        self._data: list[bytes | None] | None = None
        self._starts: list[bool] = []
        self._simple: list[bool] = []
        self._info = FrameInfo(keyframe=False)
        parts = []
        if self._old:
            lengths = np.array([len(p) for p in self._old], np.int64)
            ends = np.cumsum(lengths)
            parts.append((b"".join(self._old), ends - lengths, ends))
        if len(new):
            parts.append((rows.buf, rows.start[new], rows.end[new]))
        data: list[bytes | None] = []
        for source, start, end in parts:
            layout = payload_layout(codec, np.frombuffer(source, np.uint8), start, end)
            if layout is None:
                return
            at = (start + layout.data_start).tolist()
            if layout.prefix is None:
                cut: list[bytes | None] = [source[s:e] for s, e in zip(at, end.tolist())]
            else:
                cut = [p + source[s:e] for p, s, e in zip(layout.prefix, at, end.tolist())]
            for i in np.flatnonzero(layout.data_start < 0).tolist():
                cut[i] = None
            data.extend(cut)
            self._starts.extend(layout.starts.tolist())
            self._simple.extend(layout.simple.tolist())
            self._info = layout.simple_info
        self._data = data

    def payload(self, i: int) -> bytes:
        n = len(self._old)
        if i < n:
            return self._old[i]
        return self._buf[self._start[i - n] : self._end[i - n]]

    def starts(self, i: int) -> bool:
        if self._data is not None:
            return self._starts[i]
        try:
            return self.codec.starts_frame(self.payload(i))
        except CaptureError:
            return False

    def frame(self, a: int, b: int) -> tuple[bytes, FrameInfo]:
        """The depayloaded frame of packets a..b and what its header says; CaptureError if the
        codec refuses it."""
        cut = self._data
        if cut is not None:
            pieces = cut[a : b + 1]
            if None not in pieces:
                data = pieces[0] if a == b else b"".join(pieces)  # type: ignore[arg-type]
                assert data is not None
                if self._simple[a]:
                    return data, self._info
                return data, self.codec.frame_info(data, self.payload(a))
        codec = self.codec
        payloads = [self.payload(i) for i in range(a, b + 1)]
        whole = getattr(codec, "depayload_frame", None)  # VP9: spatial layers as a superframe
        if whole is not None and a != b:
            data = whole(payloads)
        else:
            data = b"".join([codec.depayload(p) for p in payloads])
        return data, codec.frame_info(data, payloads[0])
