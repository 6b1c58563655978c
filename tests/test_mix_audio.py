"""skymix.compose.audio.mix_audio against a plain numpy float64 reference mixer.

Tolerance: the kernel sums in float32 (as FFmpeg's amix does), the reference in float64. A float32
sum of n terms, each a product g * x (plus L + R for a stereo source into mono out, and the gain's
own rounding to float32), is within (n + 4) * 2**-24 * sum(|g * x|) of the exact sum; the limiter
has slope <= 1, so the bound carries through it. So float32 out is checked against that bound plus
the rounding of both results to float32 (for a few sources at speech level: about 1e-6), and int16
out to within 1 LSB plus 32768 times that bound (below 1 everywhere here, so within 1 LSB: a sum
within the bound of a rounding midpoint may round either way). Where results must be
bit-identical (one speaker alone, silent sources added, threads), the tests compare exactly.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skymix.compose.audio import DEFAULT_THRESHOLD, mix_audio
from skymix.errors import ComposeError

U = 2.0**-24  # float32 unit roundoff


def _as_float(x: np.ndarray) -> npt.NDArray[np.float64]:
    """A source as (frames, channels) float64 in [-1, 1]."""
    y = x.astype(np.float64) / 32768.0 if x.dtype == np.int16 else x.astype(np.float64)
    return y if y.ndim == 2 else y[:, None]


def limit(y: npt.NDArray[np.float64], threshold: float) -> npt.NDArray[np.float64]:
    """The stateless soft knee: |y| <= T unchanged, else T + (1 - T) tanh((|y| - T) / (1 - T))."""
    m = np.abs(y)
    knee = 1.0 - threshold
    soft = np.minimum(threshold + knee * np.tanh((m - threshold) / knee), 1.0)
    return np.where(m > threshold, np.copysign(soft, y), y)


def reference_sum(
    sources: Sequence[np.ndarray],
    frames: int,
    channels: int,
    offsets: Sequence[int],
    gains: Sequence[float],
    *,
    magnitude: bool = False,
) -> npt.NDArray[np.float64]:
    """The float64 sum; with ``magnitude``, sum(|g * x|) (the scale of float32 rounding)."""
    acc = np.zeros((frames, channels))
    for x, off, g in zip(sources, offsets, gains, strict=True):
        x = np.abs(_as_float(x)) if magnitude else _as_float(x)
        g = abs(g) if magnitude else g
        a, b = max(0, off), min(frames, off + len(x))
        if a >= b:
            continue
        seg = x[a - off : b - off]
        if seg.shape[1] == channels:
            acc[a:b] += g * seg
        elif channels == 2:  # mono source, stereo out: both channels at the same level
            v = g * seg[:, 0]
            acc[a:b, 0] += v
            acc[a:b, 1] += v
        else:  # stereo source, mono out: mean of L and R
            acc[a:b, 0] += g * (0.5 * (seg[:, 0] + seg[:, 1]))
    return acc


def reference_mix(
    sources: Sequence[np.ndarray],
    out: np.ndarray,
    offsets: Sequence[int] | None = None,
    gains: Sequence[float] | None = None,
    *,
    limiter: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
) -> np.ndarray:
    """What mix_audio should write into an array shaped and typed like ``out``."""
    y = reference_levels(sources, out, offsets, gains, limiter=limiter, threshold=threshold)
    if out.dtype == np.int16:
        return np.clip(np.rint(y * 32768.0), -32768, 32767).astype(np.int16)
    return y.astype(np.float32)


def reference_levels(
    sources: Sequence[np.ndarray],
    out: np.ndarray,
    offsets: Sequence[int] | None = None,
    gains: Sequence[float] | None = None,
    *,
    limiter: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
) -> npt.NDArray[np.float64]:
    """The mix in float64, limited, shaped like ``out``, before conversion to its dtype."""
    n = len(sources)
    offsets = [0] * n if offsets is None else offsets
    gains = [1.0] * n if gains is None else gains
    channels = 1 if out.ndim == 1 else out.shape[1]
    y = reference_sum(sources, out.shape[0], channels, offsets, gains)
    if limiter:
        y = limit(y, threshold)
    return y.reshape(out.shape)


def assert_mix(
    got: np.ndarray,
    sources: Sequence[np.ndarray],
    offsets: Sequence[int] | None = None,
    gains: Sequence[float] | None = None,
    *,
    limiter: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
) -> None:
    """``got`` is the reference mix within the float32 summation bound (module docstring).

    int16: equal wherever the reference sample is further than the bound from a rounding
    midpoint (k + 0.5 steps), else within 1 step (more only for a bound above half a step).
    """
    n = len(sources)
    offsets = [0] * n if offsets is None else offsets
    gains = [1.0] * n if gains is None else gains
    y = reference_levels(sources, got, offsets, gains, limiter=limiter, threshold=threshold)
    want = reference_mix(sources, got, offsets, gains, limiter=limiter, threshold=threshold)
    channels = 1 if got.ndim == 1 else got.shape[1]
    mag = reference_sum(sources, len(got), channels, offsets, gains, magnitude=True)
    bound = (n + 4) * U * mag.reshape(got.shape)
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == np.int16:
        diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
        steps = np.clip(y * 32768.0, -32768.0, 32767.0)
        near_midpoint = np.abs(steps - np.floor(steps) - 0.5) <= 32768 * bound + 1e-9
        assert np.all(diff[~near_midpoint] == 0)
        assert np.all(diff <= 1 + np.floor(32768 * bound))
    else:
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        allowed = bound + 2 * U * np.abs(want.astype(np.float64)) + 2.0**-140
        assert np.all(err <= allowed), float(np.max(err - allowed))


def make_block(
    rng: np.random.Generator, frames: int, channels: int, dtype: type, *, flat: bool = False
) -> np.ndarray:
    """Uniform noise over the full scale of the dtype; (frames,) when flat and mono."""
    shape: tuple[int, ...] = (frames,) if flat and channels == 1 else (frames, channels)
    if dtype is np.int16:
        return rng.integers(-32768, 32768, shape, dtype=np.int16)
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def speech_like(rng: np.random.Generator, frames: int, channels: int, peak: float) -> np.ndarray:
    """Noise in bursts (syllables and pauses) scaled so that max |x| == peak."""
    env = np.repeat(rng.uniform(0.0, 1.0, frames // 2400 + 1) > 0.4, 2400)[:frames]
    x = rng.standard_normal((frames, channels)) * env[:, None]
    scale = peak / max(float(np.abs(x).max()), 1e-12)
    return (x * scale).astype(np.float32)


# --- against the reference -------------------------------------------------------------------


@st.composite
def mixes(draw: st.DrawFn) -> dict:
    # the kernel works in chunks of 8192 frames: blocks of one chunk (a 20 ms block is 960
    # frames), and of two or three, with sources that start and end inside chunks
    long = draw(st.booleans())
    frames = draw(st.integers(8100, 17500) if long else st.integers(0, 2600))
    out_channels = draw(st.sampled_from([1, 2]))
    out_flat = out_channels == 1 and draw(st.booleans())
    out_dtype = draw(st.sampled_from([np.float32, np.int16]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(0, 6))
    sources, offsets, gains = [], [], []
    for _ in range(n):
        length = draw(st.integers(0, frames + 100))
        channels = draw(st.sampled_from([1, 2]))
        dtype = draw(st.sampled_from([np.float32, np.int16]))
        sources.append(make_block(rng, length, channels, dtype, flat=draw(st.booleans())))
        offsets.append(draw(st.integers(-length - 20, frames + 20)))
        gains.append(draw(st.floats(-4.0, 4.0, allow_nan=False)))
    return {
        "sources": sources,
        "out": np.full((frames,) if out_flat else (frames, out_channels), 7, out_dtype),
        "offsets": offsets,
        "gains": gains,
        "limiter": draw(st.booleans()),
        "threshold": draw(st.floats(0.05, 0.99)),
        "threads": draw(st.integers(1, 4)),
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixes())
def test_matches_reference(case: dict) -> None:
    out = case["out"]
    mix_audio(
        case["sources"],
        out,
        offsets=case["offsets"],
        gains=case["gains"],
        limiter=case["limiter"],
        threshold=case["threshold"],
        threads=case["threads"],
    )
    assert_mix(
        out,
        case["sources"],
        case["offsets"],
        case["gains"],
        limiter=case["limiter"],
        threshold=case["threshold"],
    )


@pytest.mark.parametrize("out_dtype", [np.float32, np.int16])
def test_known_answers(out_dtype: type) -> None:
    mono = np.array([0.25, -0.5, 0.125, 0.0], np.float32)
    stereo = np.array([[0.5, 0.0], [0.25, -0.25], [-0.5, -0.25], [0.0, 0.0]], np.float32)
    scale = 32768 if out_dtype == np.int16 else 1
    # mono into stereo: both channels at the source level
    out: np.ndarray = np.zeros((4, 2), out_dtype)
    mix_audio([mono], out)
    np.testing.assert_array_equal(out, np.stack([mono, mono], axis=1) * scale)
    # stereo into mono: the mean of L and R
    out = np.zeros(4, out_dtype)
    mix_audio([stereo], out)
    np.testing.assert_array_equal(out, np.array([0.25, 0.0, -0.375, 0.0]) * scale)
    # offsets and gains: source 0 skips its first frame, source 1 starts at frame 2 and is cut
    out = np.zeros(4, out_dtype)
    mix_audio([mono, mono], out, offsets=[-1, 2], gains=[2.0, -1.0], limiter=False)
    np.testing.assert_array_equal(out, np.array([-1.0, 0.25, -0.25, 0.5]) * scale)
    # no 1/N: two sources at half the level sum to the full level
    out = np.zeros(4, out_dtype)
    half = mono * np.float32(0.5)
    mix_audio([half, half], out)
    np.testing.assert_array_equal(out, mono * scale)


def test_int16_in_is_x_over_32768() -> None:
    src = np.array([-32768, -1, 0, 1, 16384, 32767], np.int16)
    out = np.zeros(6, np.float32)
    mix_audio([src], out, limiter=False)
    np.testing.assert_array_equal(out, src.astype(np.float32) / 32768)
    out16 = np.zeros(6, np.int16)
    mix_audio([src], out16, limiter=False)
    np.testing.assert_array_equal(out16, src)
    # full scale goes through the limiter's knee, and stays within range
    mix_audio([src], out16)
    np.testing.assert_array_equal(out16[1:5], src[1:5])
    assert -32768 < out16[0] < -31000 and 31000 < out16[5] < 32767


def test_non_contiguous_sources_are_read() -> None:
    rng = np.random.default_rng(3)
    wide = make_block(rng, 3000, 2, np.float32)
    sources = [wide[:, 1], wide[::2], make_block(rng, 800, 2, np.int16).T.copy().T]
    assert not any(s.flags.c_contiguous for s in sources)
    out = np.zeros((2000, 2), np.float32)
    mix_audio(sources, out, offsets=[0, 100, -5], gains=[0.5, 0.25, 0.5])
    assert_mix(out, sources, [0, 100, -5], [0.5, 0.25, 0.5])


def test_out_may_be_a_source() -> None:
    rng = np.random.default_rng(4)
    out = make_block(rng, 3000, 2, np.float32) * np.float32(0.3)
    other = make_block(rng, 2500, 1, np.int16)
    before = out.copy()
    mix_audio([out, other], out, offsets=[0, 700], gains=[1.0, 0.5])
    assert_mix(out, [before, other], [0, 700], [1.0, 0.5])


@pytest.mark.parametrize("frames", [8191, 8192, 8193, 3 * 8192 + 5])
@pytest.mark.parametrize("out_dtype", [np.float32, np.int16])
def test_chunks_and_threads(frames: int, out_dtype: type) -> None:
    """Sources starting and ending around the kernel's 8192-frame chunks, on 1 to 3 threads."""
    rng = np.random.default_rng(frames)
    sources = [
        make_block(rng, 8192, 2, np.float32) * np.float32(0.4),
        make_block(rng, 3 * 8192, 1, np.int16),
        make_block(rng, 5000, 2, np.int16),
        make_block(rng, 20_000, 1, np.float32) * np.float32(0.4),
    ]
    offsets = [0, -8191, 8190, frames - 4000]
    gains = [0.9, 0.5, -0.5, 1.25]
    results = []
    for threads in (1, 2, 3):
        out: np.ndarray = np.full((frames, 2), 3, out_dtype)
        mix_audio(sources, out, offsets=offsets, gains=gains, threads=threads)
        assert_mix(out, sources, offsets, gains)
        results.append(out)
    # every sample goes through the same float operations whichever thread does it
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_array_equal(results[2], results[0])


# --- levels: no 1/N drop, silence is neutral, the limiter bounds -----------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
@pytest.mark.parametrize("channels", [1, 2])
def test_one_speaker_alone_is_bit_identical(dtype: type, channels: int) -> None:
    """-6 dBFS in, -6 dBFS out, bit for bit: no 1/N volume drop, even beside silent sources.

    The pauses of the float32 speaker hold -0.0 samples; like every zero of the mix they come
    out as +0.0, hence the comparison with ``speaker + 0``.
    """
    rng = np.random.default_rng(5)
    x = speech_like(rng, 48_000, channels, peak=0.5)  # -6 dBFS
    speaker = x if dtype == np.float32 else np.round(x * 32768).astype(np.int16)
    silent: list[np.ndarray] = [
        np.zeros((48_000, channels), np.float32),
        np.zeros(30_000, np.int16),
        np.zeros((60_000, 2), np.float32),
    ]
    for n_silent in range(len(silent) + 1):
        out: np.ndarray = np.full((48_000, channels), 9, dtype)
        mix_audio(
            [*silent[:n_silent], speaker],
            out,
            offsets=[0, 9_000, -4_000][:n_silent] + [0],
            gains=[1.0, 0.7, 3.0][:n_silent] + [1.0],
        )
        assert out.tobytes() == (speaker + dtype(0)).tobytes()
        np.testing.assert_array_equal(out, speaker)


def test_one_speaker_at_an_offset_is_copied_exactly() -> None:
    rng = np.random.default_rng(6)
    speaker = speech_like(rng, 10_000, 2, peak=0.5)
    out = np.full((48_000, 2), 0.25, np.float32)
    mix_audio([np.zeros(48_000, np.float32), speaker], out, offsets=[0, 20_000])
    assert np.array_equal(out[20_000:30_000], speaker)
    assert not out[:20_000].any() and not out[30_000:].any()


@settings(max_examples=100, deadline=None)
@given(mixes(), st.lists(st.tuples(st.integers(-3000, 3000), st.floats(-8, 8)), max_size=4))
def test_mixing_silence_changes_nothing(case: dict, silent: list[tuple[int, float]]) -> None:
    kw = {k: case[k] for k in ("limiter", "threshold", "threads")}
    out = case["out"]
    mix_audio(case["sources"], out, offsets=case["offsets"], gains=case["gains"], **kw)
    zeros: list[np.ndarray] = [np.zeros((1500, 2), np.float32), np.zeros(2000, np.int16)]
    more = [zeros[i % 2] for i in range(len(silent))]
    out2 = np.full_like(out, 3)
    mix_audio(
        [*more, *case["sources"]],
        out2,
        offsets=[o for o, _ in silent] + case["offsets"],
        gains=[g for _, g in silent] + case["gains"],
        **kw,
    )
    np.testing.assert_array_equal(out2, out)


@pytest.mark.parametrize("channels", [1, 2])
def test_limiter_never_exceeds_full_scale(channels: int) -> None:
    rng = np.random.default_rng(7)
    loud = [speech_like(rng, 20_000, channels, peak=1.0) for _ in range(8)]
    gains = [1.0, 4.0, -2.0, 50.0, 1e6, -1e6, 3.0, 0.5]
    offsets = [0, 100, 2000, -300, 5000, 7000, 10_000, 1]
    out = np.zeros((20_000, channels), np.float32)
    mix_audio(loud, out, offsets=offsets, gains=gains)
    assert np.abs(out).max() <= 1.0
    assert np.abs(out).max() > 0.999  # it was driven hard enough to matter
    assert_mix(out, loud, offsets, gains)
    # int16: limited peaks sit near full scale with the sign of the sum, never wrapped
    out16 = np.zeros((20_000, channels), np.int16)
    mix_audio(loud, out16, offsets=offsets, gains=gains)
    total = reference_sum(loud, 20_000, channels, offsets, gains)
    hot = np.abs(total) > 2.0
    assert hot.any()
    assert np.all(np.sign(out16[hot]) == np.sign(total[hot]))
    assert np.all(np.abs(out16[hot].astype(np.int32)) > 32000)
    # without the limiter int16 clips at the rails instead of wrapping
    mix_audio(loud, out16, offsets=offsets, gains=gains, limiter=False)
    np.testing.assert_array_equal(out16[hot], np.where(total[hot] > 0, 32767, -32768))


def test_limiter_curve() -> None:
    t = DEFAULT_THRESHOLD
    assert math.isclose(t, 10 ** (-1 / 20)) and 0.891 < t < 0.892
    levels = np.array([0.0, 0.5, t, 0.9, 0.95, 1.0, 1.5, 4.0, 1e3], np.float32)
    src = np.concatenate([levels, -levels])
    out = np.zeros(len(src), np.float32)
    mix_audio([src], out)
    for x, y in zip(src, out, strict=True):
        ax = abs(float(x))
        want = ax if ax <= t else t + (1 - t) * math.tanh((ax - t) / (1 - t))
        assert abs(abs(float(y)) - want) <= 2 * U * max(want, 1.0)  # one source: no sum error
        assert math.copysign(1.0, float(y)) == math.copysign(1.0, float(x)) or x == 0
    half = len(levels)
    assert np.all(np.diff(out[:half]) >= 0)  # monotonic
    assert out[half - 1] <= 1.0 and out[half - 1] > 0.9999
    # below the threshold nothing changes; limiter=False is the plain sum
    np.testing.assert_array_equal(out[:3], levels[:3])
    plain = np.zeros(len(src), np.float32)
    mix_audio([src], plain, limiter=False)
    np.testing.assert_array_equal(plain, src)
    # the threshold is configurable
    mix_audio([src], out, threshold=0.5)
    assert out[1] == np.float32(0.5) and 0.5 < out[3] < 0.9


# --- threads and the GIL ---------------------------------------------------------------------


def _big_case(
    seed: int, n: int = 6, seconds: int = 4
) -> tuple[list[np.ndarray], np.ndarray, list[int], list[float]]:
    rng = np.random.default_rng(seed)
    frames = 48_000 * seconds
    sources = [speech_like(rng, frames, 2, peak=0.6) for _ in range(n)]
    offsets = [int(v) for v in rng.integers(-4800, 4800, n)]
    gains = [float(v) for v in rng.uniform(0.2, 1.5, n)]
    return sources, np.zeros((frames, 2), np.float32), offsets, gains


def test_two_threads_give_the_same_results_as_one() -> None:
    cases = [_big_case(seed) for seed in (10, 11)]
    alone = []
    for sources, out, offsets, gains in cases:
        mix_audio(sources, out, offsets=offsets, gains=gains, threads=1)
        alone.append(out.copy())
    start = threading.Barrier(2)

    def work(k: int) -> list[np.ndarray]:
        sources, _, offsets, gains = cases[k]
        start.wait()
        results = []
        for _ in range(5):
            out = np.full_like(alone[k], 5)
            # one of the two Python threads also splits its mix over OpenMP threads
            mix_audio(sources, out, offsets=offsets, gains=gains, threads=1 + k)
            results.append(out)
        return results

    with ThreadPoolExecutor(2) as pool:
        runs = [f.result() for f in [pool.submit(work, k) for k in range(2)]]
    for k in range(2):
        assert len(runs[k]) == 5
        for out in runs[k]:
            np.testing.assert_array_equal(out, alone[k])
        assert_mix(alone[k], cases[k][0], cases[k][2], cases[k][3])


def _ran_while(call: Callable[[], object]) -> bool:
    """Whether a waiting Python thread got the GIL during ``call()``.

    With a 5 s switch interval the interpreter never preempts a thread for another here, so
    each hands the GIL over only where it blocks or releases it: the waiter holds it from
    ``ready.set()`` until it blocks in ``go.wait()``, so when ``ready.wait()`` returns it is
    blocked there; once ``go`` is set it can only run (and append) while this thread gives the
    GIL up of its own accord, e.g. inside ``with nogil`` in the kernel.
    """
    ready, go = threading.Event(), threading.Event()
    ran: list[bool] = []

    def waiter() -> None:
        ready.set()
        go.wait()
        ran.append(True)

    old = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    thread = threading.Thread(target=waiter)
    try:
        thread.start()
        ready.wait()
        go.set()
        call()
        return bool(ran)
    finally:
        go.set()
        thread.join()
        sys.setswitchinterval(old)


def test_gil_probe_tells_holding_from_releasing() -> None:
    """The probe itself: a call that holds the GIL is caught, one that releases it is not."""
    assert not _ran_while(lambda: sum(range(10)))
    assert _ran_while(lambda: threading.Event().wait(0.01))


def test_mixing_releases_the_gil() -> None:
    """A Python thread runs while mix_audio runs, and the mix is still right.

    One worker thread, so a CPU stays free for the waiting thread even on a two-CPU machine;
    a few attempts allow for the OS scheduling something else first.
    """
    sources, out, offsets, gains = _big_case(12, n=8, seconds=10)
    released = any(
        _ran_while(lambda: mix_audio(sources, out, offsets=offsets, gains=gains, threads=1))
        for _ in range(10)
    )
    assert released
    assert_mix(out, sources, offsets, gains)


# --- bad input -------------------------------------------------------------------------------


FRAMES = 20_000  # three chunks of the kernel


def _ok() -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(20)
    sources = [
        make_block(rng, FRAMES, 2, np.float32),
        make_block(rng, FRAMES, 1, np.int16, flat=True),
        make_block(rng, FRAMES, 1, np.float32),
    ]
    return sources, np.full((FRAMES, 2), 0.75, np.float32)


def _raises(match: str, sources: list, out: np.ndarray, **kw: object) -> None:
    before = out.copy()
    with pytest.raises(ComposeError, match=match):
        mix_audio(sources, out, **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(out, before)  # nothing half-written


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_sample_names_source_and_leaves_out_untouched(bad: float) -> None:
    sources, out = _ok()
    sources[2][17_000, 0] = bad  # drawn into out frame 17100, in the kernel's third chunk
    _raises(
        rf"^source 2: sample {bad} at frame 17000 is not finite \(out is untouched\)$",
        sources,
        out,
        offsets=[0, 0, 100],
    )
    sources[0][7, 1] = bad
    _raises(rf"^source 0: sample {bad} at frame 7, channel 1 is not finite", sources, out)
    # a gain of 0 does not hide it
    _raises(r"^source 0: sample", sources, out, gains=[0.0, 1.0, 1.0])
    out16 = np.full((FRAMES, 1), 11, np.int16)
    _raises(r"^source 0: sample", sources, out16)
    _raises(r"^source 0: sample", sources, out16, threads=3)


def test_non_finite_sample_outside_the_drawn_range_is_not_read() -> None:
    sources, out = _ok()
    sources[0][10] = np.nan  # skipped by the negative offset
    sources[2][FRAMES - 10] = np.nan  # past the end of the block
    mix_audio(sources, out, offsets=[-11, 0, 100])
    assert_mix(out, [s[11:] if i == 0 else s for i, s in enumerate(sources)], [0, 0, 100])


def test_overflow_of_the_sum_is_reported() -> None:
    big = np.full(10, 3e38, np.float32)
    out = np.zeros(10, np.float32)
    _raises(
        r"^the mix overflowed float32 \(source 1 has the largest gain, 1e\+300\); "
        r"out is untouched$",
        [big, big],
        out,
        gains=[1.0, 1e300],
    )
    _raises(r"^the mix overflowed float32 \(source 0 has the largest gain, 1.0\)", [big, big], out)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (np.zeros(10, np.float64), r"^source 1: dtype float64 is not float32 or int16"),
        (np.zeros(10, np.int32), r"^source 1: dtype int32 is not float32 or int16"),
        (
            np.zeros(10, ">f4"),
            r"^source 1: dtype >f4 is not float32 or int16 \(native byte order\)",
        ),
        (
            np.zeros((10, 2, 1), np.float32),
            r"^source 1: expected \(frames,\) or \(frames, channels\), got 3-D shape \(10, 2, 1\)",
        ),
        (np.float32(0.5), r"^source 1: expected a numpy array, got float32"),
        (
            np.zeros((), np.float32),
            r"^source 1: expected \(frames,\) or \(frames, channels\), got 0-D",
        ),
        (
            np.zeros((10, 6), np.int16),
            r"^source 1: 6 channels in shape \(10, 6\); only mono and stereo",
        ),
        (np.zeros((10, 0), np.int16), r"^source 1: 0 channels"),
        ([0.0, 0.1], r"^source 1: expected a numpy array, got list"),
    ],
)
def test_bad_source_names_it(replace: object, message: str) -> None:
    sources, out = _ok()
    sources[1] = replace  # type: ignore[call-overload]
    _raises(message, sources, out)


def test_bad_out() -> None:
    sources = _ok()[0]
    _raises(r"^out: dtype float64 is not float32 or int16", sources, np.zeros((3000, 2)))
    _raises(r"^out: dtype int32 is not float32 or int16", sources, np.zeros(30, np.int32))
    _raises(r"^out: 3 channels in shape \(3000, 3\)", sources, np.zeros((3000, 3), np.float32))
    _raises(
        r"^out: expected \(frames,\) or \(frames, channels\), got 3-D",
        sources,
        np.zeros((3000, 2, 1), np.float32),
    )
    wide = np.zeros((3000, 4), np.float32)
    with pytest.raises(
        ComposeError, match=r"^out: samples are not C-contiguous \(strides \(16, 4\)\)"
    ):
        mix_audio(sources, wide[:, :2])
    frozen = np.zeros((3000, 2), np.float32)
    frozen.flags.writeable = False
    _raises(r"^out: array is read-only", sources, frozen)
    with pytest.raises(ComposeError, match=r"^out: expected a numpy array, got list"):
        mix_audio(sources, [[0.0, 0.0]] * 3000)  # type: ignore[arg-type]


def test_bad_offsets_and_gains_name_the_source() -> None:
    sources, out = _ok()
    _raises(
        r"^offsets has 2 entries for 3 sources: source 2 has none$", sources, out, offsets=[0, 1]
    )
    _raises(
        r"^offsets has 4 entries for 3 sources: offsets\[3\] has no source$",
        sources,
        out,
        offsets=[0, 1, 2, 3],
    )
    _raises(r"^gains has 1 entries for 3 sources: source 1 has none$", sources, out, gains=[1.0])
    _raises(r"^source 1: offset 1.5 is not an integer$", sources, out, offsets=[0, 1.5, 0])
    _raises(r"^source 2: offset True is not an integer$", sources, out, offsets=[0, 1, True])
    _raises(r"^source 0: offset '3' is not an integer$", sources, out, offsets=["3", 1, 0])
    _raises(r"^source 1: gain nan is not finite$", sources, out, gains=[1.0, math.nan, 1.0])
    _raises(
        r"^source 2: gain inf is not finite$", sources, out, gains=[1.0, 1.0, np.float32("inf")]
    )
    _raises(r"^source 0: gain '1' is not a real number$", sources, out, gains=["1", 1.0, 1.0])
    _raises(r"^offsets must be a sequence with one entry per source$", sources, out, offsets=5)
    # numpy integers and huge offsets are fine
    mix_audio(sources, out, offsets=np.array([0, 10**6, -(10**6)]), gains=np.ones(3, np.float32))
    mix_audio(sources, out, offsets=[10**30, -(10**30), 0])
    assert_mix(out, sources, [FRAMES, -FRAMES, 0])


def test_bad_settings() -> None:
    sources, out = _ok()
    _raises(r"^sources must be a sequence of arrays", sources[0], out)  # type: ignore[arg-type]
    _raises(r"^threshold must be within \(0, 1\)", sources, out, threshold=1.0)
    _raises(r"^threshold must be within \(0, 1\)", sources, out, threshold=-0.1)
    _raises(r"^threshold must be within \(0, 1\)", sources, out, threshold=math.nan)
    _raises(r"^threads must be a positive integer, got 0$", sources, out, threads=0)
    _raises(r"^limiter must be True or False, got 1$", sources, out, limiter=1)


def test_no_sources_and_empty_blocks() -> None:
    out = np.full((100, 2), 0.5, np.float32)
    mix_audio([], out)
    assert not out.any()
    empty = np.zeros((0, 2), np.int16)
    mix_audio([np.zeros((0, 1), np.float32)], empty)
    assert empty.shape == (0, 2)
