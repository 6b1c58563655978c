"""skymix.composite against its peers on the same frames, in the same run.

Peers per layout (grid of g x g tiles into W x H, sources of mixed sizes, portrait among them):
- ffmpeg: FFmpeg's scale (flags=area: area averaging, the same quality class) + pad + xstack
  filter graph, through PyAV's av.filter.Graph with as many filter threads as skymix uses;
- numpy: the float64 reference the tests check the kernel against;
- memcpy: np.copyto of every source plane into scratch plus one copy of the output frame: it reads
  the bytes the kernel reads and writes at least the bytes it writes, the memory-system floor.
test_skymix_busy_core times skymix while another process keeps one core busy (an encoder's thread):
calls must not stall waiting for a worker thread the OS has not scheduled (compare its median
with test_skymix_one_thread's, the time of the caller alone).
Inputs are built outside the timed calls. Run: make bench (or pytest benchmarks --benchmark-enable).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
import pytest

import skymix
from skymix.compose import frame_planes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from composite_reference import composite_reference  # noqa: E402

SIZES = [(320, 240), (640, 480), (1280, 720), (480, 640), (640, 360), (960, 540), (720, 1280)]
LAYOUTS = [(g, out) for out in ((1280, 720), (1920, 1080)) for g in (2, 3, 5)]
THREADS = len(os.sched_getaffinity(0))


def source_frames(n):
    rng = np.random.default_rng(n)
    frames = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        f = av.VideoFrame(w, h, "yuv420p")
        for plane in frame_planes(f, "source"):
            yy, xx = np.indices(plane.shape)
            plane[:] = (
                (
                    128
                    + 90 * np.sin(xx / 9.0 + i) * np.cos(yy / 13.0)
                    + rng.normal(0, 6, plane.shape)
                )
                .clip(0, 255)
                .astype(np.uint8)
            )
        frames.append(f)
    return frames


def grid_rects(g, size):
    w, h = size
    return [
        skymix.Rect(
            c * w // g, r * h // g, (c + 1) * w // g - c * w // g, (r + 1) * h // g - r * h // g
        )
        for r in range(g)
        for c in range(g)
    ]


def contain_size(src, rect):
    """The scaled content size composite() uses for `contain` (see fit_tile in the kernel)."""
    s = min(rect.w / src.width, rect.h / src.height)
    return (
        min(max(int(np.floor(src.width * s + 0.5)), 1), rect.w),
        min(max(int(np.floor(src.height * s + 0.5)), 1), rect.h),
    )


class FFmpegGrid:
    """scale+pad per tile into xstack: what an FFmpeg command line does for a grid recording."""

    def __init__(self, frames, rects, size):
        g = av.filter.Graph()
        g.threads = THREADS
        self.buffers = [
            g.add_buffer(
                width=f.width, height=f.height, format="yuv420p", time_base=Fraction(1, 30)
            )
            for f in frames
        ]
        # pad cannot make an odd-sized yuv420p frame: tile edges move to even positions
        rects = [
            skymix.Rect(
                r.x // 2 * 2,
                r.y // 2 * 2,
                (r.x + r.w) // 2 * 2 - r.x // 2 * 2,
                (r.y + r.h) // 2 * 2 - r.y // 2 * 2,
            )
            for r in rects
        ]
        layout = "|".join(f"{r.x}_{r.y}" for r in rects)
        stack = g.add("xstack", f"inputs={len(frames)}:layout={layout}:fill=black")
        for i, (buf, f, r) in enumerate(zip(self.buffers, frames, rects)):
            cw, ch = contain_size(f, r)
            scale = g.add("scale", f"{cw}:{ch}:flags=area")
            pad = g.add("pad", f"{r.w}:{r.h}:{(r.w - cw) // 2}:{(r.h - ch) // 2}:color=black")
            buf.link_to(scale)
            scale.link_to(pad)
            pad.link_to(stack, 0, i)
        self.sink = g.add("buffersink")
        stack.link_to(self.sink)
        g.configure()
        self.graph = g  # the filter contexts do not keep their graph alive
        self.frames = frames
        self.pts = 0
        self.size = size

    def __call__(self):
        for buf, f in zip(self.buffers, self.frames):
            f.pts = self.pts
            buf.push(f)
        self.pts += 1
        out = self.sink.pull()
        assert (out.width, out.height) == self.size
        return out


@pytest.fixture(scope="module", params=LAYOUTS, ids=lambda p: f"{p[0]}x{p[0]}-{p[1][0]}x{p[1][1]}")
def layout(request):
    g, size = request.param
    frames = source_frames(g * g)
    rects = grid_rects(g, size)
    tiles = [skymix.Tile(f, r) for f, r in zip(frames, rects)]
    return g, size, frames, rects, tiles


def group(layout):
    g, size = layout[0], layout[1]
    return f"compose {g}x{g} into {size[0]}x{size[1]}"


def test_skymix(benchmark, layout):
    g, size, frames, rects, tiles = layout
    out = av.VideoFrame(*size, "yuv420p")
    benchmark.group = group(layout)
    benchmark(skymix.composite, tiles, out)


def test_skymix_one_thread(benchmark, layout):
    g, size, frames, rects, tiles = layout
    out = av.VideoFrame(*size, "yuv420p")
    benchmark.group = group(layout)
    benchmark(skymix.composite, tiles, out, threads=1)


@pytest.fixture
def busy_core():
    """A process spinning on one core for the duration of a test."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.2)
    yield
    proc.kill()
    proc.wait()


def test_skymix_busy_core(benchmark, layout, busy_core):
    g, size, frames, rects, tiles = layout
    out = av.VideoFrame(*size, "yuv420p")
    benchmark.group = group(layout)
    benchmark(skymix.composite, tiles, out)


def test_ffmpeg_graph(benchmark, layout):
    g, size, frames, rects, tiles = layout
    run = FFmpegGrid(frames, rects, size)
    run()
    benchmark.group = group(layout)
    benchmark(run)


def test_memcpy_floor(benchmark, layout):
    g, size, frames, rects, tiles = layout
    srcs = [p.copy() for f in frames for p in frame_planes(f, "source")]
    scratch = [np.empty_like(p) for p in srcs]
    out_src = av.VideoFrame(*size, "yuv420p")
    out_dst = [np.empty_like(p) for p in frame_planes(out_src, "out")]
    out_planes = frame_planes(out_src, "out")

    def copy():
        for s, d in zip(srcs, scratch):
            np.copyto(d, s)
        for s, d in zip(out_planes, out_dst):
            np.copyto(d, s)

    benchmark.group = group(layout)
    benchmark(copy)


def test_numpy_reference(benchmark, layout):
    g, size, frames, rects, tiles = layout
    specs = [
        (frame_planes(f, "source"), (r.x, r.y, r.w, r.h), "contain", None)
        for f, r in zip(frames, rects)
    ]
    benchmark.group = group(layout)
    benchmark.pedantic(composite_reference, args=(specs, size), rounds=3, iterations=1)


def test_redraw_unchanged(benchmark, layout):
    """The same tiles again into the same frame: what a 15 fps source in a 30 fps output costs."""
    g, size, frames, rects, tiles = layout
    out = av.VideoFrame(*size, "yuv420p")
    state = skymix.composite(tiles, out)
    benchmark.group = group(layout)
    benchmark(skymix.composite, tiles, out, previous=state)
