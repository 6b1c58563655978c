"""One participant's audio on the recording's sample clock, placed sample-exactly by RTP time.

Decoded blocks are written where their session time says. A sender's clock drifts against the
relay's (hundreds of ppm: a second an hour), so consecutive blocks do not quite abut: within a
small tolerance they are written back to back (no clicks) and the error is steered away by
stretching or shrinking a block by one sample (0.1 %, inaudible); a larger gap (loss, mute, DTX
the decoder did not fill) is left silent and a block that comes much too early (a sender clock
jump) starts where its time says. Reading consumes: memory is a fixed ring.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import SkymixError

__all__ = ["TRACK_CHANNELS", "AudioTrack", "PlacementStats"]

Samples = npt.NDArray[np.float32]

#: Channels of a participant's track by default: decoders give stereo (mono doubled).
TRACK_CHANNELS = 2
#: Placement error (samples) tolerated before a block is stretched or shrunk by one sample.
STEER = 2
#: Placement error beyond which the block is placed where its time says (10 ms at 48 kHz).
JUMP = 480


@dataclass(slots=True)
class PlacementStats:
    """blocks: written; stretched/shrunk: by one sample against drift; gaps: silences left by a
    jump forward (samples_silent in all); jumps_back: blocks placed over earlier audio; late:
    samples dropped because their place had already been read out."""

    blocks: int = 0
    stretched: int = 0
    shrunk: int = 0
    gaps: int = 0
    samples_silent: int = 0
    jumps_back: int = 0
    late: int = 0


class AudioTrack:
    """A ring of float32 (frames, channels) samples indexed by absolute output position."""

    def __init__(self, channels: int = TRACK_CHANNELS, capacity: int = 1 << 18) -> None:
        self._ring = np.zeros((capacity, channels), np.float32)
        self._capacity = capacity
        self._read = 0  # the next position read() hands out
        self._cursor: int | None = None  # where the next block goes when on time
        self.stats = PlacementStats()

    @property
    def cursor(self) -> int | None:
        return self._cursor

    def place(self, ideal: float, block: Samples) -> None:
        """Write block whose first sample belongs at output position ideal (fractional)."""
        if block.ndim != 2 or block.shape[1] != self._ring.shape[1]:
            raise SkymixError(
                f"audio block of shape {block.shape}, expected (n, {self._ring.shape[1]})"
            )
        stats = self.stats
        stats.blocks += 1
        at = self._cursor
        error = 0.0 if at is None else ideal - at
        if at is None or abs(error) > JUMP:
            if at is not None and error > 0:
                stats.gaps += 1
                stats.samples_silent += round(ideal) - at
            elif at is not None:
                stats.jumps_back += 1
            at = round(ideal)
        elif error > STEER and len(block) > 1:
            block = _resample(block, len(block) + 1)
            stats.stretched += 1
        elif error < -STEER and len(block) > 2:
            block = _resample(block, len(block) - 1)
            stats.shrunk += 1
        self._cursor = at + len(block)
        self._write(at, block)

    def _write(self, at: int, block: Samples) -> None:
        if at < self._read:
            cut = min(self._read - at, len(block))
            self.stats.late += cut
            block, at = block[cut:], at + cut
        end = at + len(block)
        if end - self._read > self._capacity:
            raise SkymixError(
                f"audio placed {(end - self._read) / 48000:.1f} s ahead of the "
                "recording: more than the track holds"
            )
        a = at % self._capacity
        if a + len(block) <= self._capacity:  # the usual case: no wrap around the ring
            self._ring[a : a + len(block)] += block
            return
        for start, stop, offset in self._spans(at, end):
            self._ring[start:stop] += block[offset : offset + stop - start]

    def read(self, start: int, count: int, out: Samples | None = None) -> Samples:
        """Samples [start, start + count) (silence where nothing was placed), into `out` when
        given (a (count, channels) float32 array); everything before start + count is consumed."""
        if out is None:
            out = np.zeros((count, self._ring.shape[1]), np.float32)
        elif out.shape != (count, self._ring.shape[1]) or out.dtype != np.float32:
            raise SkymixError(
                f"read into a {out.dtype} array of shape {out.shape}, expected "
                f"float32 ({count}, {self._ring.shape[1]})"
            )
        else:
            out[:] = 0.0
        begin = max(start, self._read)
        if begin < start + count:
            for a, b, offset in self._spans(begin, start + count):
                out[begin - start + offset : begin - start + offset + b - a] = self._ring[a:b]
                self._ring[a:b] = 0.0
        # anything placed before start and never read is dropped
        if start > self._read:
            for a, b, _ in self._spans(self._read, min(start, self._read + self._capacity)):
                self._ring[a:b] = 0.0
        self._read = max(self._read, start + count)
        return out

    def _spans(self, begin: int, end: int) -> list[tuple[int, int, int]]:
        """Ring index ranges of absolute positions [begin, end): (a, b, offset into the run)."""
        a = begin % self._capacity
        length = end - begin
        if a + length <= self._capacity:
            return [(a, a + length, 0)]
        first = self._capacity - a
        return [(a, self._capacity, 0), (0, length - first, first)]


def _resample(block: Samples, length: int) -> Samples:
    """block stretched or shrunk to length samples by linear interpolation (ends kept)."""
    left, right, weight = _stretch(len(block), length)
    a, out = block.take(left, axis=0), block.take(right, axis=0)
    out -= a
    out *= weight
    out += a
    return out


@functools.lru_cache(maxsize=64)
def _stretch(
    size: int, length: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Where each of `length` output samples falls between the samples of a `size`-sample block:
    its neighbours' indices and the weight of the right one (a column, for every channel).
    Blocks are a few sizes (20 ms frames and the like), so these are made once each."""
    position = np.linspace(0.0, size - 1, length)
    left = np.minimum(position.astype(np.intp), size - 2)
    return left, left + 1, (position - left).astype(np.float32)[:, None]
