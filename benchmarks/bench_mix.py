"""skymix.mix_audio against its peers on the same audio, in the same run.

The job: N sources (4, 16) of 10 s of 48 kHz stereo float32 speech-like noise, each with its own
offset (-1.5 s .. +1.5 s: some start before the timeline, all are cut by it) and gain, mixed into
a 10 s float32 timeline block by block, as a recorder does: in 1-second blocks (48000 frames) and
in 20 ms blocks (960 frames, the WebRTC packet cadence, where per-call costs dominate).
Peers per N and block size, one pytest-benchmark group each:
- skymix: mix_audio per block (limiter on: the production setting, a superset of the work), with
  its default of one thread, and with every CPU this process may use (threads=N, OpenMP);
- ffmpeg: FFmpeg's amix filter through PyAV (abuffer per source -> amix=inputs=N:normalize=0:
  weights=<gains> -> abuffersink). The graph is built once, outside the timed call; each run pushes
  one av.AudioFrame a block ('flt', packed stereo, what amix mixes natively) per source and pulls
  the mixed frames. Those input frames are cut from the sources and aligned to the blocks
  (zeros where a source is silent) outside the timed call, so amix gets the offsets for free;
  the timed call does not convert its output to numpy either. normalize=0 keeps the levels:
  amix's default normalize=1 divides by the number of inputs, the 1/N drop mix_audio avoids;
- numpy: the float64 reference the tests check the kernel against (tests/test_mix_audio.py);
- memcpy: np.copyto of every drawn source segment into a scratch block, then of the scratch into
  the output block: it reads the bytes the kernel reads and writes those it writes, the
  memory-system floor of any mixer on this machine (no arithmetic at all).
Once per N, outside timing, amix's output is checked against mix_audio(limiter=False) (same sum,
float32 arithmetic in amix), so the groups time the same job.
Inputs are built outside the timed calls. Run: make bench (or pytest benchmarks --benchmark-enable).
"""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
import pytest

from skymix.compose.audio import mix_audio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_mix_audio import reference_mix  # noqa: E402

RATE = 48_000
SECONDS = 10
BLOCK_SIZES = {"1s": RATE, "20ms": RATE // 50}
CPUS = len(os.sched_getaffinity(0))


def speech(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Stereo talk-spurts: noise under a 4 Hz syllable envelope, on and off for 0.3-2 s."""
    on = np.zeros(frames, bool)
    at, talking = 0, bool(rng.integers(2))
    while at < frames:
        span = int(rng.uniform(0.3, 2.0) * RATE)
        on[at : at + span] = talking
        at, talking = at + span, not talking
    t = np.arange(frames) / RATE
    env = on * (0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.3)))
    noise = rng.standard_normal((frames, 2)) * np.array([1.0, 0.8])
    return (0.08 * noise * env[:, None]).astype(np.float32)  # about -22 dBFS RMS while talking


class Case:
    def __init__(self, n: int, block: str) -> None:
        rng = np.random.default_rng(n)
        self.n = n
        self.block_name = block
        self.block = BLOCK_SIZES[block]
        self.blocks = SECONDS * RATE // self.block
        self.sources = [speech(rng, SECONDS * RATE) for _ in range(n)]
        self.offsets = [int(v) for v in rng.integers(-3 * RATE // 2, 3 * RATE // 2, n)]
        # multiples of 1/64: exact in float32, so amix's float weights equal mix_audio's gains
        self.gains = [float(v) for v in np.round(rng.uniform(0.3, 1.2, n) * 64) / 64]
        self.out = np.zeros((SECONDS * RATE, 2), np.float32)

    def block_offsets(self, b: int) -> list[int]:
        return [o - b * self.block for o in self.offsets]


def run_skymix(case: Case, *, threads: int = 1, limiter: bool = True) -> np.ndarray:
    for b in range(case.blocks):
        mix_audio(
            case.sources,
            case.out[b * case.block : (b + 1) * case.block],
            offsets=case.block_offsets(b),
            gains=case.gains,
            limiter=limiter,
            threads=threads,
        )
    return case.out


def run_numpy(case: Case) -> np.ndarray:
    for b in range(case.blocks):
        block = case.out[b * case.block : (b + 1) * case.block]
        block[:] = reference_mix(case.sources, block, case.block_offsets(b), case.gains)
    return case.out


def run_memcpy(case: Case) -> np.ndarray:
    scratch = np.empty((case.block, 2), np.float32)
    for b in range(case.blocks):
        for src, off in zip(case.sources, case.block_offsets(b), strict=True):
            lo, hi = max(0, off), min(case.block, off + len(src))
            if lo < hi:
                np.copyto(scratch[lo:hi], src[lo - off : hi - off])
        np.copyto(case.out[b * case.block : (b + 1) * case.block], scratch)
    return case.out


class AmixGraph:
    """abuffer x N -> amix(normalize=0, weights=gains) -> abuffersink, fed a frame a block."""

    def __init__(self, case: Case) -> None:
        g = av.filter.Graph()
        tb = Fraction(1, RATE)
        self.buffers = [
            g.add_abuffer(sample_rate=RATE, format="flt", layout="stereo", time_base=tb)
            for _ in range(case.n)
        ]
        weights = " ".join(repr(x) for x in case.gains)
        amix = g.add("amix", f"inputs={case.n}:normalize=0:duration=longest:weights={weights}")
        for i, buf in enumerate(self.buffers):
            buf.link_to(amix, 0, i)
        self.sink = g.add("abuffersink")
        amix.link_to(self.sink)
        g.configure()
        self.graph = g  # the filter contexts do not keep their graph alive
        # per block, per source: the part of the source that lands in the block, zero-padded
        self.frames: list[list[av.AudioFrame]] = []
        self.block = case.block
        for b in range(case.blocks):
            row = []
            for src, off in zip(case.sources, case.block_offsets(b), strict=True):
                seg = np.zeros((case.block, 2), np.float32)
                lo, hi = max(0, off), min(case.block, off + len(src))
                if lo < hi:
                    seg[lo:hi] = src[lo - off : hi - off]
                f = av.AudioFrame.from_ndarray(seg.reshape(1, -1), format="flt", layout="stereo")
                f.sample_rate = RATE
                f.time_base = tb
                row.append(f)
            self.frames.append(row)
        self.pts = 0

    def __call__(self) -> list[av.AudioFrame]:
        out = []
        for row in self.frames:
            for buf, f in zip(self.buffers, row, strict=True):
                f.pts = self.pts
                buf.push(f)
            self.pts += self.block
            while True:
                try:
                    out.append(self.sink.pull())  # type: ignore[arg-type]
                except BlockingIOError:
                    break
        return out


@pytest.fixture(
    scope="module",
    params=[(n, block) for block in BLOCK_SIZES for n in (4, 16)],
    ids=lambda p: f"{p[0]}src-{p[1]}",
)
def case(request: pytest.FixtureRequest) -> Case:
    return Case(*request.param)


def group(case: Case) -> str:
    return f"mix {case.n} sources, {SECONDS} s 48 kHz stereo float32, {case.block_name} blocks"


def test_amix_and_skymix_compute_the_same_sum(case: Case) -> None:
    """Outside timing: amix (normalize=0) and mix_audio without limiting agree on the mix."""
    frames = AmixGraph(case)()
    assert {f.format.name for f in frames} == {"flt"}  # no conversion inside the graph
    assert {f.layout.name for f in frames} == {"stereo"}
    got = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in frames])
    assert got.shape == (SECONDS * RATE, 2)
    ours = run_skymix(case, limiter=False).copy()
    assert np.abs(ours).max() > 0.25  # a real mix, not silence
    # both sum in float32, amix through its own order of operations: a few ulp apart
    np.testing.assert_allclose(got, ours, rtol=0, atol=1e-5)
    np.testing.assert_allclose(run_numpy(case), run_skymix(case), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(run_skymix(case, threads=CPUS), run_skymix(case))


def test_skymix(benchmark, case: Case) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = group(case)
    benchmark(run_skymix, case)


def test_skymix_all_cpus(benchmark, case: Case) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = group(case)
    benchmark(run_skymix, case, threads=CPUS)


def test_ffmpeg_amix(benchmark, case: Case) -> None:  # type: ignore[no-untyped-def]
    run = AmixGraph(case)
    run()
    benchmark.group = group(case)
    benchmark(run)


def test_numpy_reference(benchmark, case: Case) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = group(case)
    benchmark.pedantic(run_numpy, args=(case,), rounds=3, iterations=1)


def test_memcpy_floor(benchmark, case: Case) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = group(case)
    benchmark(run_memcpy, case)
