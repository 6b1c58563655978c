"""Mix sample-aligned PCM blocks (48 kHz, mono or stereo) into one output block.

The per-sample work runs in skymix._native.mix without the GIL (on request split over OpenMP
threads); this module validates what the caller passes and turns it into what the kernel trusts.
It is called once per block (every 20 ms in a live mix), so the checks are kept cheap.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import NoReturn, TypeAlias

import numpy as np
import numpy.typing as npt

from .._native import mix as _kernel
from ..errors import ComposeError

__all__ = ["DEFAULT_THRESHOLD", "SAMPLE_RATE", "Pcm", "mix_audio"]

SAMPLE_RATE = 48_000
"""The rate every block is assumed to be at; the mixer never resamples."""

DEFAULT_THRESHOLD = 10 ** (-1 / 20)
"""-1 dBFS: the level above which the limiter's soft knee starts."""

Pcm: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.int16]

_DTYPE_CHARS = "fh"  # numpy's codes for float32 and int16
_MAX_OFFSET = 1 << 62  # offsets beyond this draw nothing either way; the kernel works in int64


def _layout(a: np.ndarray, what: str) -> int:
    """Frames of a (frames,) or (frames, channels) block of mono or stereo float32/int16 PCM."""
    dtype = a.dtype
    if dtype.char not in _DTYPE_CHARS or not dtype.isnative:
        raise ComposeError(f"{what}: dtype {dtype} is not float32 or int16 (native byte order)")
    if a.ndim == 2:
        if not 1 <= a.shape[1] <= 2:
            raise ComposeError(
                f"{what}: {a.shape[1]} channels in shape {a.shape}; only mono and stereo are mixed"
            )
    elif a.ndim != 1:
        raise ComposeError(
            f"{what}: expected (frames,) or (frames, channels), got {a.ndim}-D shape {a.shape}"
        )
    return a.shape[0]


def _per_source(values: object, n: int, name: str) -> list[object]:
    if isinstance(values, np.ndarray) and values.ndim == 1:
        values = values.tolist()  # Python ints and floats: the fast path below
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ComposeError(f"{name} must be a sequence with one entry per source")
    items = list(values)
    if len(items) < n:
        raise ComposeError(
            f"{name} has {len(items)} entries for {n} sources: source {len(items)} has none"
        )
    if len(items) > n:
        raise ComposeError(
            f"{name} has {len(items)} entries for {n} sources: {name}[{n}] has no source"
        )
    return items


def _offsets(offsets: object, n: int) -> list[int]:
    items = _per_source(offsets, n, "offsets")
    for i, value in enumerate(items):
        if type(value) is int and -_MAX_OFFSET <= value <= _MAX_OFFSET:
            continue
        if isinstance(value, (bool, np.bool_)):
            raise ComposeError(f"source {i}: offset {value!r} is not an integer")
        try:
            index = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise ComposeError(f"source {i}: offset {value!r} is not an integer") from None
        items[i] = max(-_MAX_OFFSET, min(index, _MAX_OFFSET))
    return items  # type: ignore[return-value]


def _gains(gains: object, n: int) -> list[float]:
    items = _per_source(gains, n, "gains")
    for i, value in enumerate(items):
        if type(value) is not float:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise ComposeError(f"source {i}: gain {value!r} is not a real number")
            value = items[i] = float(value)
        if not math.isfinite(value):
            raise ComposeError(f"source {i}: gain {value!r} is not finite")
    return items  # type: ignore[return-value]


def mix_audio(
    sources: Sequence[Pcm],
    out: Pcm,
    *,
    offsets: Sequence[int] | npt.NDArray[np.integer] | None = None,
    gains: Sequence[float] | npt.NDArray[np.floating] | None = None,
    limiter: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
    threads: int = 1,
) -> None:
    """Sum ``sources`` into ``out`` in place, each at its own frame offset and gain, then limit.

    Blocks are (frames,) mono or (frames, channels) interleaved with 1 or 2 channels, float32
    in [-1, 1] or int16 (read as x / 32768). ``out`` is float32 or int16, C-contiguous and
    writable; every sample of it is written (silence where no source is). A mono source goes to
    both channels of a stereo ``out`` at the same level; a stereo source into a mono ``out``
    is the mean of L and R. Non-contiguous sources are copied first (a cost, not an error).

    ``offsets[i]`` (default 0) is the frame of ``out`` where source i's frame 0 lands: negative
    skips the source's first ``-offsets[i]`` frames, at or past the end draws nothing, and a source
    longer than what is left of the block is cut. So consecutive blocks stay sample-aligned.
    ``gains[i]`` is linear (default 1.0).

    The sum is taken in float32 (as FFmpeg's ``amix`` does; the error is a few units in the last
    place of sum(|gain * x|), far below an int16 step) and is NOT divided by the number of
    sources (``amix`` does that by default, so one speaker alone comes out quieter the more
    sources there are): one source alone at gain 1 comes out bit for bit as it went in (int16
    to int16, float32 to float32; a -0.0 sample comes out as 0.0, as every zero does).

    Instead, with ``limiter`` on, every sample goes through a soft knee, each channel on its
    own and with no state or delay (so blocks need no overlap and stay sample-aligned): |y| <=
    ``threshold`` (T, default -1 dBFS) passes unchanged, above it y becomes
    ``sign(y) * (T + (1 - T) * tanh((|y| - T) / (1 - T)))``, continuous with slope 1 at T and
    approaching but never exceeding full scale. With ``limiter=False`` float32 out is the plain
    sum and int16 out is clipped. int16 out is ``round(y * 32768)`` (ties to even) clipped to
    [-32768, 32767], so it never wraps.

    Raises ComposeError, naming the source, for a wrong dtype, shape or channel count, offsets
    or gains of the wrong length, a non-integer offset, a non-finite gain, or a NaN or infinite
    sample among those drawn; in every case ``out`` is left untouched. ``out`` may be one of the
    sources: all samples are read before any is written.

    The GIL is released while mixing. ``threads`` (default 1) > 1 splits the block, in chunks of
    8192 frames, over that many OpenMP threads: about twice as fast on idle cores, but each call
    then waits for every thread, which costs milliseconds when the cores are busy with other
    work (a recorder's video compositing, say), so it is opt-in.
    """
    if isinstance(sources, np.ndarray) or not isinstance(sources, Sequence):
        raise ComposeError("sources must be a sequence of arrays (a list, even for one source)")
    n = len(sources)
    if not isinstance(out, np.ndarray):
        raise ComposeError(f"out: expected a numpy array, got {type(out).__name__}")
    frames = _layout(out, "out")
    if not (out.flags.c_contiguous and out.flags.aligned):
        raise ComposeError(
            f"out: samples are not C-contiguous (strides {out.strides}); mix into a contiguous "
            "array and copy it over"
        )
    if not out.flags.writeable:
        raise ComposeError("out: array is read-only")
    if limiter is not True and limiter is not False and not isinstance(limiter, np.bool_):
        raise ComposeError(f"limiter must be True or False, got {limiter!r}")
    if type(threshold) is not float and not isinstance(threshold, numbers.Real):
        raise ComposeError(f"threshold must be a real number, got {threshold!r}")
    if not 0.0 < threshold < 1.0:
        raise ComposeError(
            f"threshold must be within (0, 1) (linear, e.g. 10 ** (-1 / 20)), got {threshold!r}"
        )
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ComposeError(f"threads must be a positive integer, got {threads!r}")

    offs = [0] * n if offsets is None else _offsets(offsets, n)
    gs = [1.0] * n if gains is None else _gains(gains, n)
    blocks = list(sources)
    for i, source in enumerate(blocks):
        if not isinstance(source, np.ndarray):
            raise ComposeError(f"source {i}: expected a numpy array, got {type(source).__name__}")
        _layout(source, f"source {i}")
        flags = source.flags
        if not (flags.c_contiguous and flags.aligned):
            blocks[i] = np.require(source, requirements=("C", "A"))

    if _kernel.mix_into(
        blocks,
        offs,
        gs,
        out if out.ndim == 2 else out.reshape(frames, 1),
        bool(limiter),
        float(threshold),
        min(int(threads), 1024),
    ):
        _raise_non_finite(blocks, offs, gs, frames)


def _raise_non_finite(
    blocks: list[np.ndarray], offsets: list[int], gains: list[float], frames: int
) -> NoReturn:
    """The kernel found a sum that is not finite and wrote nothing: say which source caused it."""
    for i, block in enumerate(blocks):
        if block.dtype.char != "f":
            continue  # int16 samples are always finite
        skip = max(0, -offsets[i])
        drawn = block[skip : max(skip, frames - offsets[i])]
        bad = np.argwhere(~np.isfinite(drawn))
        if len(bad):
            frame = int(bad[0][0])
            channel = (
                f", channel {int(bad[0][1])}" if drawn.ndim == 2 and drawn.shape[1] > 1 else ""
            )
            value = drawn[tuple(bad[0])]
            raise ComposeError(
                f"source {i}: sample {value} at frame {frame + skip}{channel} is not finite "
                "(out is untouched)"
            )
    worst = max(range(len(gains)), key=lambda i: abs(gains[i]))
    raise ComposeError(
        f"the mix overflowed float32 (source {worst} has the largest gain, {gains[worst]!r}); "
        "out is untouched"
    )
